// Partitioned projections on every read-model store: the clean-pass model, a failing partition isolated
// (its error row, retry, skip), idle workers that end and start again, the fence and the leases the
// partitions rest on, and a model-based random test of the partition scheduling.

#include <algorithm>
#include <atomic>
#include <functional>
#include <iostream>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <type_traits>

#include <gtest/gtest.h>

#include "projections/harness.hpp"
#include "sourced/projection_partitions.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

PartitionedRunnerOptions quiet(PartitionedRunnerOptions o = {}) {
  o.progress = ProgressDisplay::none;
  if (!o.log) o.log = [](std::string_view) {};
  o.retry_initial = 5ms;
  o.takeover_interval = 100ms;
  return o;
}

// One attempt, and batches that end only at 1000 events: a failing event is met in a batch that holds the
// good events before it.
PartitionedRunnerOptions one_attempt_long_batches(std::uint32_t partitions) {
  return quiet({.partitions = partitions,
                .batch_events = 1000,
                .batch_interval = std::chrono::milliseconds(60000),
                .max_attempts = 1});
}

// The clean-pass model without the events at `skipped` positions.
Model fold_without(EventStore& store, const std::set<std::uint64_t>& skipped) {
  std::map<std::string, std::array<std::int64_t, 3>> rows;
  for (const auto& e : store.read_all({})) {
    if (skipped.count(e.position.value())) continue;
    auto& r = rows[e.stream];
    r[0] += 1;
    r[1] += static_cast<std::int64_t>(e.position.value());
    r[2] = static_cast<std::int64_t>(e.position.value());
  }
  Model m;
  for (auto& [k, r] : rows) m[k] = row_text(r[0], r[1], r[2]);
  return m;
}

template <class H>
class Partitions : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = h_.skip_reason()) GTEST_SKIP() << *why;
  }

  Position append(const std::string& stream, int n = 1) {
    std::vector<EventData> batch;
    for (int i = 0; i < n; ++i) batch.push_back(event("Happened"));
    return h_.events().append(stream, ExpectedVersion::any(), batch).last_position;
  }
  Position append_spread(int n, int streams) {
    Position last;
    for (int i = 0; i < n; ++i) last = append("s-" + std::to_string(i % streams));
    return last;
  }

  // The partition `key` stopped, failed, just before the event at `bad` (the events up to `good` committed),
  // with one unresolved error row naming it, which `check` looks at further. Then the event is skipped and
  // `partitions` partitions run again to `head`: the model is the clean pass without that one event.
  void expect_stopped_just_before_then_skip(const ProjectionKey& key, Position good, Position bad, Position head,
                                            std::uint32_t partitions,
                                            const std::function<void(const ProjectionError&)>& check) {
    auto state = h_.models().load_state(key);
    ASSERT_TRUE(state);
    EXPECT_EQ(state->status, ProjectionStatus::failed);
    EXPECT_GE(state->checkpoint, good) << "the events before the failing one are committed";
    EXPECT_LT(state->checkpoint, bad);
    auto errors = h_.models().list_errors("counts");
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0].position, bad);
    EXPECT_EQ(errors[0].resolution, "");
    check(errors[0]);
    EXPECT_EQ(skip_partition_event(h_.models(), key).position, bad);
    PartitionedProjectionRunner runner(h_.events(), h_.models(), h_.projection("counts"),
                                       quiet({.partitions = partitions}));
    ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
    runner.stop();
    EXPECT_EQ(h_.model("counts"), fold_without(h_.events(), {bad.value()})) << "only the skipped event is missing";
  }

  H h_;
};

TYPED_TEST_SUITE(Partitions, AllModelStores, ModelStoreNames);

TYPED_TEST(Partitions, EveryPartitionAppliesItsEventsInOrderAndTheModelIsTheCleanPass) {
  auto head = this->append_spread(400, 23);
  std::mutex mu;
  std::map<std::string, std::uint64_t> last_of_stream;
  bool out_of_order = false;
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(),
                                     this->h_.projection("counts",
                                                         [&](const RecordedEvent& e) {
                                                           std::lock_guard lock(mu);
                                                           auto& last = last_of_stream[e.stream];
                                                           if (e.position.value() <= last) out_of_order = true;
                                                           last = e.position.value();
                                                         }),
                                     quiet({.partitions = 4, .batch_events = 16}));
  ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
  auto tail = this->append_spread(50, 23);
  ASSERT_EQ(runner.wait_for(tail, 30s), WaitResult::reached);
  runner.stop();
  EXPECT_FALSE(out_of_order);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
  int rows = 0;
  for (auto& s : this->h_.models().list_states()) {
    if (s.key.name != "counts") continue;
    ++rows;
    EXPECT_EQ(s.status, ProjectionStatus::stopped) << s.key.partition;
  }
  EXPECT_EQ(rows, 4) << "one state row per partition";
}

TYPED_TEST(Partitions, AFailingPartitionStopsAloneWithItsErrorRowAndARetryFinishesIt) {
  this->append_spread(120, 17);
  auto bad = this->append("bad", 3);  // the third event of "bad" fails while `failing`
  this->append("bad", 2);
  auto head = this->append_spread(120, 17);
  std::atomic<bool> failing{true};
  std::atomic<int> tries{0};
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(),
                                     this->h_.projection("counts",
                                                         [&](const RecordedEvent& e) {
                                                           if (e.position == bad && failing) {
                                                             ++tries;
                                                             throw std::runtime_error("boom");
                                                           }
                                                         }),
                                     quiet({.partitions = 4, .batch_events = 8, .max_attempts = 3}));
  RecordedEvent bad_event;
  for (const auto& e : this->h_.events().read_all({})) {
    if (e.position == bad) bad_event = e;
  }
  std::uint32_t p = runner.partition_of(bad_event);
  EXPECT_EQ(runner.wait_for(head, 30s), WaitResult::stopped) << "a failed partition does not reach the head";
  EXPECT_EQ(tries, 3);
  // The other partitions finish: every stream outside the failed one is as in a clean pass. (`stopped` comes
  // as soon as the failed partition has stopped, which may be before the others are through.)
  auto clean = fold(this->h_.events());
  auto others_through = [&] {
    auto now_model = this->h_.model("counts");
    for (auto& [stream, row] : clean) {
      RecordedEvent probe;
      probe.stream = stream;
      if (runner.partition_of(probe) != p && now_model[stream] != row) return false;
    }
    return true;
  };
  for (int i = 0; i < 1500 && !others_through(); ++i) std::this_thread::sleep_for(20ms);
  auto model = this->h_.model("counts");
  for (auto& [stream, row] : clean) {
    RecordedEvent probe;
    probe.stream = stream;
    if (runner.partition_of(probe) != p) EXPECT_EQ(model[stream], row) << stream;
  }
  auto key = ProjectionKey{"counts", 1, std::to_string(p)};
  auto state = this->h_.models().load_state(key);
  ASSERT_TRUE(state);
  EXPECT_EQ(state->status, ProjectionStatus::failed);
  EXPECT_LT(state->checkpoint, bad) << "stopped just before the failing event";
  auto errors = this->h_.models().list_errors("counts");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].key, key);
  EXPECT_EQ(errors[0].position, bad);
  EXPECT_EQ(errors[0].event_id, bad_event.id.to_string());
  EXPECT_EQ(errors[0].stream, "bad");
  EXPECT_EQ(errors[0].event_type, "Happened");
  EXPECT_NE(errors[0].message.find("boom"), std::string::npos) << errors[0].message;
  EXPECT_EQ(errors[0].attempts, 3u);
  EXPECT_GT(errors[0].failed_at, Timestamp());
  EXPECT_EQ(errors[0].resolution, "");

  // The other partitions go on while this one stays failed: events appended after the failure reach the
  // model (a runner that stopped every partition, or started none, once one failed would not get there).
  this->append_spread(60, 17);
  auto others_done = [&] {
    auto now_model = this->h_.model("counts");
    for (auto& [stream, row] : fold(this->h_.events())) {
      RecordedEvent probe;
      probe.stream = stream;
      if (runner.partition_of(probe) != p && now_model[stream] != row) return false;
    }
    return true;
  };
  for (int i = 0; i < 1500 && !others_done(); ++i) std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(others_done()) << "the other partitions stopped with the failed one";
  EXPECT_EQ(this->h_.models().load_state(key)->status, ProjectionStatus::failed);
  head = this->h_.events().head_position();

  failing = false;
  runner.retry(p);
  ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
  runner.stop();
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events())) << "the retry applied the event once";
  errors = this->h_.models().list_errors("counts");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].resolution, "retried");
  EXPECT_TRUE(errors[0].resolved_at);
  EXPECT_THROW(retry_partition(this->h_.models(), key), InvalidArgument) << "it has not failed any more";
}

TYPED_TEST(Partitions, SkippingAFailedEventMovesPastItAloneFromAnotherStoreObject) {
  this->append_spread(60, 7);
  this->append("bad", 2);
  auto bad = this->append("bad");
  this->append("bad", 2);
  auto head = this->append_spread(60, 7);
  std::atomic<int> applied_bad{0};
  {
    PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(),
                                       this->h_.projection("counts",
                                                           [&](const RecordedEvent& e) {
                                                             if (e.position == bad) throw std::runtime_error("no");
                                                           }),
                                       quiet({.partitions = 3, .batch_events = 50, .max_attempts = 2}));
    EXPECT_EQ(runner.wait_for(head, 30s), WaitResult::stopped);
  }
  auto key = ProjectionKey{"counts", 1, std::to_string(partition_for("bad", 3))};
  auto& models = this->h_.reopen_models();  // as the CLI would, from its own store object
  auto skipped = skip_partition_event(models, key);
  EXPECT_EQ(skipped.position, bad);
  EXPECT_EQ(skipped.resolution, "skipped");
  EXPECT_EQ(models.load_state(key)->checkpoint, bad);
  EXPECT_THROW(skip_partition_event(models, key), InvalidArgument) << "nothing left to skip";
  PartitionedProjectionRunner runner(this->h_.events(), models,
                                     this->h_.projection("counts",
                                                         [&](const RecordedEvent& e) {
                                                           if (e.position == bad) ++applied_bad;
                                                         }),
                                     quiet({.partitions = 3}));
  ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
  runner.stop();
  EXPECT_EQ(applied_bad, 0);
  EXPECT_EQ(this->h_.model("counts"), fold_without(this->h_.events(), {bad.value()}))
      << "only the skipped event is missing";
  EXPECT_EQ(models.list_errors("counts").at(0).resolution, "skipped");
}

// Review 5, PP-1: with max_attempts = 1, a batch holding the partition's good events before the failing one
// was rolled back whole and the partition stopped with its checkpoint before them; a skip then jumped over
// them too. The partition must stop just before the event that really fails, whatever max_attempts.
TYPED_TEST(Partitions, WithOneAttemptTheEventsBeforeTheFailingOneInItsBatchAreKeptAndASkipSkipsOnlyIt) {
  this->append_spread(30, 5);
  this->append("bad", 2);
  auto good = this->append("bad");
  auto bad = this->append("bad");
  this->append("bad", 2);
  auto head = this->append_spread(30, 5);
  auto key = ProjectionKey{"counts", 1, std::to_string(partition_for("bad", 3))};
  {
    PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(),
                                       this->h_.projection("counts",
                                                           [&](const RecordedEvent& e) {
                                                             if (e.position == bad) throw std::runtime_error("no");
                                                           }),
                                       one_attempt_long_batches(3));
    EXPECT_EQ(runner.wait_for(head, 30s), WaitResult::stopped);
  }
  this->expect_stopped_just_before_then_skip(key, good, bad, head, 3, [](const ProjectionError&) {});
}

// PP-1 for a failed commit: a batch of several events whose end_batch (or commit) fails names no event; its
// events are applied one by one before the partition may stop, so the error row names the event whose
// batch really fails, skippable, and the events before it are committed.
TYPED_TEST(Partitions, AFailedCommitOfSeveralEventsIsNarrowedToTheEventThatFailsBeforeThePartitionStops) {
  this->append("a", 3);
  auto good = this->append("b");
  auto bad = this->append("a");
  auto head = this->append("b", 3);
  RecordedEvent bad_event;
  for (const auto& e : this->h_.events().read_all({})) {
    if (e.position == bad) bad_event = e;
  }
  auto key = ProjectionKey{"counts", 1, "0"};
  {
    bool holds_bad = false;  // one partition: one worker thread
    auto p = this->h_.projection("counts", [&](const RecordedEvent& e) { holds_bad = holds_bad || e.position == bad; });
    p.begin_batch = [&](auto&) { holds_bad = false; };
    p.end_batch = [&](auto&) {
      if (holds_bad) throw std::runtime_error("the batch breaks a rule");
    };
    PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p), one_attempt_long_batches(1));
    EXPECT_EQ(runner.wait_for(head, 30s), WaitResult::stopped);
  }
  this->expect_stopped_just_before_then_skip(key, good, bad, head, 1, [&](const ProjectionError& error) {
    EXPECT_EQ(error.event_id, bad_event.id.to_string());
    EXPECT_NE(error.message.find("the batch breaks a rule"), std::string::npos) << error.message;
  });
}

TYPED_TEST(Partitions, IdleWorkersEndAndStartAgainWhenEventsArrive) {
  std::mutex mu;
  std::map<std::uint32_t, int> taken;
  std::atomic<int> working{0};
  PartitionedRunnerOptions o = quiet({.partitions = 2, .idle_shutdown = 150ms});
  o.on_lease = [&](std::uint32_t p, bool take) {
    std::lock_guard lock(mu);
    if (take) ++taken[p];
    working += take ? 1 : -1;
  };
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(), this->h_.projection("counts"), o);
  auto a = this->append("a", 5);
  ASSERT_EQ(runner.wait_for(a, 30s), WaitResult::reached);
  auto pa = partition_for("a", 2);
  for (int i = 0; i < 300 && working > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(working, 0) << "the idle worker ended";
  EXPECT_EQ(runner.wait_for(a, 10ms), WaitResult::reached) << "an idle partition still counts as processed";
  auto b = this->append("a", 3);
  ASSERT_EQ(runner.wait_for(b, 30s), WaitResult::reached);
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(taken[pa], 2) << "started again for the new events";
    EXPECT_EQ(taken[1 - pa], 0) << "the other partition never had work";
  }
  runner.stop();
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

TYPED_TEST(Partitions, LeasesExcludeEachOtherAndTheFenceRefusesAMovedCheckpoint) {
  auto& models = this->h_.models();
  ProjectionKey k{"fenced", 1, "0"};
  auto lease = models.try_lease(k);
  ASSERT_TRUE(lease);
  EXPECT_TRUE(lease->held());
  EXPECT_FALSE(models.try_lease(k)) << "one holder at a time";
  EXPECT_TRUE(models.try_lease(ProjectionKey{"fenced", 1, "1"})) << "another partition is free";
  lease.reset();
  EXPECT_TRUE(models.try_lease(k)) << "free again once released";

  ProjectionState row{k, Position(10), ProjectionStatus::following, "", 0, now()};
  {
    auto tx = models.begin_transaction();
    EXPECT_TRUE(tx->save_state_if(row, Position(0))) << "no row counts as checkpoint 0";
    tx->commit();
  }
  {
    auto tx = models.begin_transaction();
    row.checkpoint = Position(20);
    EXPECT_FALSE(tx->save_state_if(row, Position(5))) << "the checkpoint is 10, not 5";
  }
  EXPECT_EQ(models.load_state(k)->checkpoint, Position(10));
  {
    auto tx = models.begin_transaction();
    EXPECT_TRUE(tx->save_state_if(row, Position(10)));
    tx->commit();
  }
  EXPECT_EQ(models.load_state(k)->checkpoint, Position(20));
}

TYPED_TEST(Partitions, ARunnerRefusesStateRowsOfAnotherPartitionCount) {
  auto head = this->append_spread(20, 5);
  {
    PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(), this->h_.projection("counts"),
                                       quiet({.partitions = 4}));
    ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
  }
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(), this->h_.projection("counts"),
                                     quiet({.partitions = 2}));
  ASSERT_TRUE(runner.wait_until_stopped(10s));
  ASSERT_TRUE(runner.error());
  try {
    std::rethrow_exception(runner.error());
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("runs with 2 partitions"), std::string::npos) << e.what();
  }
}

TYPED_TEST(Partitions, RebuildClearsTheModelAndResetsEveryPartition) {
  this->append_spread(100, 9);
  {
    PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(), this->h_.projection("counts"),
                                       quiet({.partitions = 3, .stop_when_caught_up = true}));
    ASSERT_TRUE(runner.wait_until_stopped(30s));
  }
  std::atomic<int> applied{0};
  PartitionedProjectionRunner runner(
      this->h_.events(), this->h_.models(), this->h_.projection("counts", [&](const RecordedEvent&) { ++applied; }),
      quiet({.partitions = 3, .start = StartMode::rebuild, .stop_when_caught_up = true}));
  ASSERT_TRUE(runner.wait_until_stopped(30s));
  EXPECT_FALSE(runner.error());
  EXPECT_EQ(applied, 100);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

// The partition scheduling as a state machine (each partition idle, working, retrying or failed; the
// runner started and stopped) driven by random steps: appends to random streams, events that fail until
// retried or are skipped, runners stopped and started again, idle periods. The model is the clean pass
// without the skipped events.
TYPED_TEST(Partitions, RandomSchedulesEndInTheCleanPassWithoutTheSkippedEvents) {
  for (unsigned seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed * 7919);
    std::mutex mu;
    std::set<std::uint64_t> poisoned;  // positions that throw while poisoned
    std::set<std::uint64_t> skipped;
    std::string name = "random" + std::to_string(seed);
    auto make = [&] {
      return this->h_.projection(name, [&](const RecordedEvent& e) {
        std::lock_guard lock(mu);
        if (poisoned.count(e.position.value())) throw std::runtime_error("poisoned");
      });
    };
    const std::uint32_t kParts = 3;
    auto options = quiet({.partitions = kParts,
                          .batch_events = 1 + rng() % 20,
                          .batch_interval = 5ms,
                          .max_attempts = 2,
                          .idle_shutdown = std::chrono::milliseconds(rng() % 2 ? 20 : 1000)});
    auto runner = std::make_unique<PartitionedProjectionRunner>(this->h_.events(), this->h_.models(), make(), options);
    Position head;
    for (int step = 0; step < 40; ++step) {
      switch (rng() % 6) {
        case 0:
        case 1: {
          int n = 1 + static_cast<int>(rng() % 8);
          head = this->append("r-" + std::to_string(rng() % 11), n);
          if (rng() % 5 == 0) {
            std::lock_guard lock(mu);
            poisoned.insert(head.value());
          }
          break;
        }
        case 2:
          runner.reset();
          runner = std::make_unique<PartitionedProjectionRunner>(this->h_.events(), this->h_.models(), make(), options);
          break;
        case 3:
          std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
          break;
        case 4:
        case 5: {
          // Settle, then resolve one failed partition: retry (the event no longer throws) or skip it.
          runner->wait_for(head, 5s);
          for (auto& s : this->h_.models().list_states()) {
            if (s.key.name != name || s.status != ProjectionStatus::failed) continue;
            auto p = static_cast<std::uint32_t>(std::stoul(s.key.partition));
            if (rng() % 2) {
              auto e = runner->skip(p);
              std::lock_guard lock(mu);
              skipped.insert(e.position.value());
            } else {
              {
                std::lock_guard lock(mu);
                for (auto& err : this->h_.models().list_errors(name)) {
                  if (err.key == s.key && err.resolution.empty()) poisoned.erase(err.position.value());
                }
              }
              runner->retry(p);
            }
            break;
          }
          break;
        }
      }
    }
    {
      std::lock_guard lock(mu);
      poisoned.clear();
    }
    for (int round = 0; round < 10; ++round) {
      if (runner->wait_for(head, 10s) == WaitResult::reached) break;
      for (auto& s : this->h_.models().list_states()) {
        if (s.key.name == name && s.status == ProjectionStatus::failed) {
          runner->retry(static_cast<std::uint32_t>(std::stoul(s.key.partition)));
        }
      }
    }
    ASSERT_EQ(runner->wait_for(head, 10s), WaitResult::reached);
    runner.reset();
    EXPECT_EQ(this->h_.model(name), fold_without(this->h_.events(), skipped));
  }
}

// Review 5, PP-3: a partition that failed at some event while later events of it were already read made
// wait_for of a position between the two wait its whole timeout instead of answering `stopped`.
TYPED_TEST(Partitions, WaitForAnswersStoppedAtOnceForAPositionPastTheEventAFailedPartitionStoppedOn) {
  this->append_spread(20, 5);
  this->append("bad", 2);
  auto bad = this->append("bad");
  auto between = this->append_spread(20, 5);
  this->append("bad", 3);  // later events of the failed partition
  auto head = this->append_spread(20, 5);
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(),
                                     this->h_.projection("counts",
                                                         [&](const RecordedEvent& e) {
                                                           if (e.position == bad) throw std::runtime_error("no");
                                                         }),
                                     quiet({.partitions = 3, .max_attempts = 1}));
  ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::stopped);
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(runner.wait_for(between, 5s), WaitResult::stopped);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s) << "answered at once, not after its timeout";
  EXPECT_EQ(runner.wait_for(Position(bad.value() - 1), 5s), WaitResult::reached)
      << "everything before the failing event is processed";
}

// Review 5, PP-4: a process that once processed a partition kept its old checkpoint in mind after a rebuild
// elsewhere reset the rows: wait_for said `reached` for a model that had just been cleared, and the process
// never helped with the rebuilt partitions.
TYPED_TEST(Partitions, ARebuildElsewhereIsSeenByARunningProcessAndItHelpsReplay) {
  auto head = this->append_spread(40, 7);
  {
    PartitionedProjectionRunner first(this->h_.events(), this->h_.models(), this->h_.projection("counts"),
                                      quiet({.partitions = 2, .stop_when_caught_up = true}));
    ASSERT_TRUE(first.wait_until_stopped(30s));
  }
  // Resumed at the head: this process has read none of the events before it.
  std::atomic<bool> hold{true};
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(),
                                     this->h_.projection("counts",
                                                         [&](const RecordedEvent&) {
                                                           while (hold) std::this_thread::sleep_for(5ms);
                                                         }),
                                     quiet({.partitions = 2}));
  ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
  {
    // What a rebuild in another process does (prepare() of a runner started with StartMode::rebuild): every
    // lease, the model cleared and every checkpoint reset in one transaction, the leases let go.
    auto& models = this->h_.models();
    std::vector<std::unique_ptr<ProjectionLease>> leases;
    for (std::uint32_t p = 0; p < 2; ++p) {
      leases.push_back(models.try_lease(ProjectionKey{"counts", 1, std::to_string(p)}));
      ASSERT_TRUE(leases.back());
    }
    auto tx = models.begin_transaction();
    auto& typed = dynamic_cast<typename TypeParam::Tx&>(*tx);
    this->h_.projection("counts").clear(typed);
    for (std::uint32_t p = 0; p < 2; ++p) {
      tx->save_state(ProjectionState{ProjectionKey{"counts", 1, std::to_string(p)}, Position(0),
                                     ProjectionStatus::rebuilding, "", 0, now()});
    }
    tx->commit();
  }
  std::this_thread::sleep_for(500ms);  // the rows are read every takeover_interval (100 ms)
  EXPECT_EQ(runner.wait_for(head, 1s), WaitResult::timeout) << "the model was cleared: the head is not processed";
  hold = false;
  ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached) << "this process replays the rebuilt partitions";
  runner.stop();
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

// Review 5, PP-5: a process holding other partitions held a partition back for fairness (25 ms per
// partition held) and then looked at it again only at the next poll, takeover_interval later.
TYPED_TEST(Partitions, APartitionHeldBackForFairnessStartsWhenItsTurnComesNotAtTheNextPoll) {
  std::string x = "x", y = "y0";
  for (int i = 1; partition_for(y, 2) == partition_for(x, 2); ++i) y = "y" + std::to_string(i);
  std::atomic<bool> hold{true};
  std::atomic<int> applied_x{0};
  std::atomic<int> idle_ends{0};
  // y's worker keeps retrying (and so holds its partition) without keeping a transaction open, which
  // would hold up the other partition's.
  PartitionedRunnerOptions o =
      quiet({.partitions = 2, .max_attempts = 1000000, .retry_max = 20ms, .idle_shutdown = 300ms});
  o.takeover_interval = 20s;  // no poll comes during the test
  o.on_lease = [&](std::uint32_t p, bool take) {
    if (!take && p == partition_for(x, 2)) ++idle_ends;
  };
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(),
                                     this->h_.projection("counts",
                                                         [&](const RecordedEvent& e) {
                                                           if (e.stream == x) ++applied_x;
                                                           if (e.stream == y && hold) throw std::runtime_error("held");
                                                         }),
                                     o);
  this->append(y);  // its worker takes y's partition and keeps failing on it: this process holds one
  std::this_thread::sleep_for(200ms);
  auto applied_within = [&](int n, std::chrono::milliseconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (applied_x < n && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
    return applied_x >= n;
  };
  this->append(x);
  EXPECT_TRUE(applied_within(1, 2s)) << "x's partition started after its fairness delay";
  for (int i = 0; i < 300 && idle_ends == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(idle_ends, 1) << "its worker ended when idle";
  this->append(x);
  EXPECT_TRUE(applied_within(2, 1s)) << "started again after its idle shutdown";
  hold = false;
  ASSERT_EQ(runner.wait_for(this->h_.events().head_position(), 30s), WaitResult::reached);
  runner.stop();
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

// A rebuild resets every partition's row to `rebuilding` at 0; a partition without events never got a
// worker, so its row stayed so (lag = the head in `projections`) after the rebuild had passed the head.
TYPED_TEST(Partitions, AfterARebuildPassesTheHeadPartitionsWithoutEventsAreFollowingAtTheHead) {
  auto head = this->append("only", 5);
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(), this->h_.projection("counts"),
                                     quiet({.partitions = 4, .start = StartMode::rebuild}));
  ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
  auto settled = [&] {
    int rows = 0;
    for (auto& s : this->h_.models().list_states()) {
      if (s.key.name != "counts") continue;
      ++rows;
      if (s.checkpoint < head || s.status != ProjectionStatus::following) return false;
    }
    return rows == 4;
  };
  for (int i = 0; i < 500 && !settled(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(settled()) << "every row at the head, following";
  auto more = this->append("only");
  ASSERT_EQ(runner.wait_for(more, 30s), WaitResult::reached);
  runner.stop();
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

// What the transient-error tests run with: two partitions, batches of 10 events, quick retries, and a
// partition that would stop at an event's second failure in a row (max_attempts 2).
PartitionedRunnerOptions stopping_at_the_second_attempt(KeptLog& log) {
  PartitionedRunnerOptions o = quiet({.partitions = 2, .batch_events = 10, .batch_interval = 20ms, .max_attempts = 2});
  o.retry_max = 50ms;
  o.log = log.sink();
  return o;
}

// After the transient errors have ended: `runner` reaches `head` with no partition failed, none logged
// that it stops, no error rows, and the model is the clean pass.
template <class Store>
void expect_the_clean_pass_and_no_stop(PartitionedProjectionRunner& runner, Store& models, EventStore& events,
                                       Position head, const KeptLog& log) {
  EXPECT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
  for (auto& part : runner.progress().partitions) EXPECT_NE(part.status, ProjectionStatus::failed) << part.partition;
  runner.stop();
  EXPECT_TRUE(models.list_errors("counts").empty());
  Model model;
  models.query(SqlModel::select("counts"), {},
               [&](const SqlRow& r) { model[std::string(r.text(0))] = row_text(r.int64(1), r.int64(2), r.int64(3)); });
  EXPECT_EQ(model, fold(events));
  for (auto& line : log.lines()) EXPECT_EQ(line.find("the partition stops"), std::string::npos) << line;
}

// A waiter is released by its partition's commit as soon as the worker has applied its position, not at
// the batch's size or time limit and not after further reads (as the plain runner is): here the handler of
// the awaited event appends another event of the same partition, whose handler then holds the worker, so
// only a commit before that next read releases the waiter. On a busy log a worker keeps finding new events,
// and without this commit a waiter waited for the batch's limits (bench follow, events in PostgreSQL).
TYPED_TEST(Partitions, AWaiterIsReleasedBeforeTheBatchLimitsOrTheNextReadWouldCommit) {
  std::atomic<bool> hold{true};
  auto first = this->append("a-1");
  Position awaited(first.value() + 10);
  auto p = this->h_.projection("counts", [&](const RecordedEvent& e) {
    if (e.position == awaited) this->h_.events().append("slow-1", ExpectedVersion::any(), {event("Happened")});
    // Bounded, so a failed test cannot leave the worker stuck here.
    for (int i = 0; e.stream == "slow-1" && hold && i < 20000; ++i) std::this_thread::sleep_for(1ms);
  });
  auto o = quiet({.partitions = 2, .batch_events = 1'000'000, .batch_interval = std::chrono::hours(1)});
  o.key = [](const RecordedEvent&) { return std::string("one partition"); };
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p), o);
  ASSERT_EQ(runner.wait_for(first, 10s), WaitResult::reached) << "the worker is live";
  // The events come after the waiter has begun waiting (ample time for it to get there).
  std::jthread writer([&] {
    std::this_thread::sleep_for(200ms);
    this->append("a-1", 10);
  });
  EXPECT_EQ(runner.wait_for(awaited, 5s), WaitResult::reached);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events(), std::nullopt, awaited.value()));
  hold = false;
  writer.join();
  EXPECT_EQ(runner.wait_for(this->h_.events().head_position(), 10s), WaitResult::reached);
  runner.stop();
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

// A partition has processed a position once its own events at or before it are committed; its events
// after it do not hold a waiter. Here partition `b` is worked by nobody (its lease held by the test), and
// one append puts an event of `a` and then one of `b` in the log: waiting for the event of `a` waits for
// `a`'s commit only, not for `b`'s next one (with events arriving all the time, every partition has some
// past any waited position). The event of `b` itself waits, until `b` is let go and worked.
TYPED_TEST(Partitions, APartitionWhoseOnlyEventsComeAfterAPositionHasProcessedIt) {
  std::string type_a, type_b;
  for (int i = 0; type_a.empty() || type_b.empty(); ++i) {
    std::string t = "T" + std::to_string(i);
    (partition_for(t, 2) == 0 ? type_a : type_b) = t;
  }
  auto o = quiet({.partitions = 2});
  o.key = [](const RecordedEvent& e) { return e.type; };
  auto lease = this->h_.models().try_lease(ProjectionKey{"counts", 1, "1"});
  ASSERT_TRUE(lease);
  PartitionedProjectionRunner runner(this->h_.events(), this->h_.models(), this->h_.projection("counts"), o);
  auto both = this->h_.events().append("s-1", ExpectedVersion::any(), {event(type_a), event(type_b)}).last_position;
  Position of_a(both.value() - 1);
  EXPECT_EQ(runner.wait_for(of_a, 10s), WaitResult::reached);
  EXPECT_EQ(runner.progress().partitions[1].position, of_a) << "b: through the position before its event";
  EXPECT_EQ(runner.wait_for(both, 300ms), WaitResult::timeout);
  lease.reset();
  EXPECT_EQ(runner.wait_for(both, 30s), WaitResult::reached);
  runner.stop();
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

// A read-model file another program holds the write lock of (here: a transaction of its own, longer than
// the store's busy timeout) makes every batch fail with a transient StorageError: contention, not the
// event's fault. The partitions retry for as long as it lasts without counting towards max_attempts (2
// here), and finish the clean pass once the file is free.
TEST(PartitionsOnSqlite, ABusyReadModelFileIsRetriedWithoutCountingTowardsMaxAttempts) {
  TempDir dir;
  auto events = open_sqlite_store((dir.path() / "events.db").string());
  auto models_path = (dir.path() / "models.db").string();
  SqliteProjectionStore models(models_path, {.busy_timeout_ms = 20});
  KeptLog log;
  PartitionedProjectionRunner runner(*events, models, sql_counts<SqliteProjectionTransaction>(),
                                     stopping_at_the_second_attempt(log));
  ASSERT_EQ(runner.wait_for(append_round(*events, "A"), 30s), WaitResult::reached);

  SqliteWriteLockHolder other(models_path);
  auto head = append_round(*events, "B");
  for (int i = 0; i < 1000 && log.count("database is locked") < 8; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(log.count("database is locked"), 8u) << "the partitions stopped retrying while the file was busy";
  other.release();
  expect_the_clean_pass_and_no_stop(runner, models, *events, head, log);
}

#ifdef SOURCED_WITH_POSTGRES
// Review 5, PP-2: one store error in the coordinator (a PostgreSQL restart, a reset connection) ended the
// whole runner for good, and the workers counted failed reads of the log as their partition's failures.
// Here the server ends every connection of the runner (its events and its read-model store share an
// application_name) again and again while events are appended: the runner carries on, no partition
// fails, and the model is the clean pass.
TEST(PartitionsOnPostgres, TheRunnerCarriesOnThroughKilledConnectionsAndEndsInTheCleanPass) {
  auto url = test_pg_url();
  if (!url) GTEST_SKIP() << pg_skip_message();
  PgSchema schema{*url};
  const std::string app = "sourced_pp2_" + schema.name;
  const std::string runner_url = *url + (url->find('?') == std::string::npos ? "?" : "&") + "application_name=" + app;
  auto appender = open_postgres_store(*url, PostgresOptions{.schema = schema.name});
  auto events = open_postgres_store(runner_url, PostgresOptions{.schema = schema.name});
  PostgresProjectionStore models(runner_url, {.schema = schema.name});
  Projection<PostgresProjectionTransaction> p;
  p.name = "counts";
  p.handle = [sql = SqlModel::upsert("counts", true)](PostgresProjectionTransaction& tx, const RecordedEvent& e) {
    tx.execute(sql, {e.stream, e.position.value()});
  };
  p.setup = [sql = SqlModel::create("counts")](PostgresProjectionTransaction& tx) { tx.execute(sql); };
  std::mutex log_mu;
  std::vector<std::string> log;
  PartitionedRunnerOptions o = quiet({.partitions = 3, .batch_events = 10, .batch_interval = 20ms});
  o.retry_max = 200ms;
  o.log = [&](std::string_view line) {
    std::lock_guard lock(log_mu);
    log.emplace_back(line);
  };
  PartitionedProjectionRunner runner(*events, models, p, o);
  Position head;
  for (int i = 0; i < 20; ++i)
    head = appender->append("k-" + std::to_string(i % 7), ExpectedVersion::any(), {event("A")}).last_position;
  ASSERT_EQ(runner.wait_for(head, 30s), WaitResult::reached);

  std::atomic<bool> done{false};
  std::atomic<int> kills{0};
  std::thread killer([&] {
    while (!done) {
      pg_admin_exec(*url,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '" + app + "'");
      ++kills;
      std::this_thread::sleep_for(20ms);
    }
  });
  for (int i = 0; i < 80; ++i) {
    head =
        appender->append("k-" + std::to_string(i % 7), ExpectedVersion::any(), {event("A"), event("B")}).last_position;
    std::this_thread::sleep_for(15ms);
  }
  done = true;
  killer.join();
  EXPECT_GT(kills, 10);
  EXPECT_EQ(runner.wait_for(head, 60s), WaitResult::reached);
  if (::testing::Test::HasFailure()) {
    std::lock_guard lock(log_mu);
    for (std::size_t i = log.size() > 40 ? log.size() - 40 : 0; i < log.size(); ++i) std::cerr << log[i] << "\n";
  }
  EXPECT_TRUE(runner.running()) << "the coordinator carried on";
  EXPECT_FALSE(runner.error());
  for (auto& part : runner.progress().partitions) EXPECT_NE(part.status, ProjectionStatus::failed) << part.partition;
  runner.stop();
  EXPECT_TRUE(models.list_errors("counts").empty());
  Model model;
  for (int attempt = 0;; ++attempt) {
    try {
      model.clear();
      models.query(SqlModel::select("counts"), {}, [&](const SqlRow& r) {
        model[std::string(r.text(0))] = row_text(r.int64(1), r.int64(2), r.int64(3));
      });
      break;
    } catch (const ConnectionError&) {
      if (attempt > 3) throw;
    }
  }
  EXPECT_EQ(model, fold(*appender));
  std::lock_guard lock(log_mu);
  bool retried = false;
  for (auto& line : log) retried = retried || line.find("retrying") != std::string::npos;
  EXPECT_TRUE(retried) << "the kills hit the runner";
}

// Transient server errors in a handler's statements (PostgreSQL: serialization failure 40001, deadlock
// 40P01, a terminated backend 57P01, raised by the server as a function would; then a real row lock held
// by another session, lock not available 55P03) are contention or an outage, not the event's fault: the
// partition retries them for as long as they last, never stopping at max_attempts (2 here), and the model
// ends as the clean pass with no error rows.
TEST(PartitionsOnPostgres, TransientServerErrorsInAHandlerAreRetriedWithoutCountingTowardsMaxAttempts) {
  auto url = test_pg_url();
  if (!url) GTEST_SKIP() << pg_skip_message();
  PgSchema schema{*url};
  auto events = open_postgres_store(*url, PostgresOptions{.schema = schema.name});
  PostgresProjectionStore models(*url, {.schema = schema.name});
  PgGate gate(*url, schema.name);
  auto p = sql_counts<PostgresProjectionTransaction>(
      [&](PostgresProjectionTransaction& tx, const RecordedEvent& e) { gate.meet(tx, e); });
  KeptLog log;
  PartitionedProjectionRunner runner(*events, models, p, stopping_at_the_second_attempt(log));
  append_round(*events, "A");
  events->append("k-3", ExpectedVersion::any(), {event("Gated")});
  auto head = append_round(*events, "B");
  for (int i = 0; i < 1000 && gate.tries() < 8; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(gate.tries(), 8) << "the partition stopped retrying the gated event";
  gate.release();
  expect_the_clean_pass_and_no_stop(runner, models, *events, head, log);
  for (std::string state : PgGate::kStates) {
    EXPECT_GT(log.count(state, "a store failure"), 0u) << "SQLSTATE " << state << " was not retried as a store failure";
  }
}
#endif
}  // namespace
}  // namespace sourced::testing
