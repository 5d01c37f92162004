// Projections on every read-model store: rebuild, follow, resume; wait_for; failures that roll a batch
// back and are retried or stop the runner; progress.

#include "sourced/projection.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "projections/harness.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

// A ManualClock that a thread moves 50 ms ahead every real millisecond: back-off without the wait.
class FastClock {
 public:
  ManualClock clock;

 private:
  std::jthread mover_{[this](std::stop_token stop) {
    while (!stop.stop_requested()) {
      std::this_thread::sleep_for(1ms);
      clock.advance(50ms);
    }
  }};
};

ProjectionRunnerOptions quiet(ProjectionRunnerOptions o = {}) {
  o.progress = ProgressDisplay::none;
  if (!o.log) o.log = [](std::string_view) {};
  return o;
}

template <class H>
class Projections : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = h_.skip_reason()) GTEST_SKIP() << *why;
  }

  // `n` events spread over `streams` streams of `category`, one append each of 10 events.
  Position append(int n, const std::string& category = "account", int streams = 10) {
    Position last;
    std::vector<EventData> batch;
    for (int i = 0; i < n; ++i) {
      batch.push_back(event("Happened"));
      if (batch.size() == 10 || i == n - 1) {
        last = h_.events()
                   .append(category + "-" + std::to_string(next_stream_++ % streams), ExpectedVersion::any(), batch)
                   .last_position;
        batch.clear();
      }
    }
    return last;
  }

  // Runs `p` from its checkpoint (or rebuilds it) until it has caught up with the head, then stops.
  void run_once(Projection<typename H::Tx> p, StartMode start, ProjectionRunnerOptions o = {}) {
    o.start = start;
    o.stop_when_caught_up = true;
    ProjectionRunner runner(h_.events(), h_.models(), std::move(p), quiet(o));
    ASSERT_TRUE(runner.wait_until_stopped(60s));
    if (auto e = runner.error()) std::rethrow_exception(e);
  }

  H h_;
  int next_stream_ = 0;
};

#ifdef SOURCED_WITH_POSTGRES
using Stores = ::testing::Types<MemoryModels, SqliteModels, PostgresModels, SqliteModelsT<true>, PostgresModelsT<true>>;
#else
using Stores = ::testing::Types<MemoryModels, SqliteModels>;
#endif
TYPED_TEST_SUITE(Projections, Stores, ModelStoreNames);

TYPED_TEST(Projections, RebuildAppliesEveryEventOnceAndSavesTheHeadAsCheckpoint) {
  auto head = this->append(500);
  this->run_once(this->h_.projection("counts"), StartMode::rebuild, {.batch_events = 64});
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
  auto state = this->h_.models().load_state({"counts", 1, ""});
  ASSERT_TRUE(state);
  EXPECT_EQ(state->checkpoint, head);
  EXPECT_EQ(state->status, ProjectionStatus::stopped);
  EXPECT_EQ(state->attempts, 0u);
}

TYPED_TEST(Projections, RebuildClearsTheModelAndReplaysFromScratch) {
  this->append(200);
  this->run_once(this->h_.projection("counts"), StartMode::rebuild);
  this->append(100);
  std::atomic<int> applied{0};
  this->run_once(this->h_.projection("counts", [&](const RecordedEvent&) { ++applied; }), StartMode::rebuild);
  EXPECT_EQ(applied, 300) << "a rebuild replays every event";
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events())) << "and what was there is cleared first";
}

TYPED_TEST(Projections, ResumeAppliesOnlyWhatCameAfterTheCheckpoint) {
  this->append(150);
  this->run_once(this->h_.projection("counts"), StartMode::resume);
  auto before = this->h_.models().load_state({"counts", 1, ""})->checkpoint;
  this->append(70);
  std::vector<std::uint64_t> seen;
  auto& models = this->h_.reopen_models();  // a restart: a new store object over the same database
  ProjectionRunnerOptions o = quiet({.stop_when_caught_up = true});
  ProjectionRunner runner(
      this->h_.events(), models,
      this->h_.projection("counts", [&](const RecordedEvent& e) { seen.push_back(e.position.value()); }), o);
  ASSERT_TRUE(runner.wait_until_stopped(60s));
  ASSERT_EQ(seen.size(), 70u);
  EXPECT_EQ(seen.front(), before.value() + 1);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

TYPED_TEST(Projections, FollowsNewEventsAndWaitForReturnsOnceTheyAreApplied) {
  this->append(100);
  ProjectionRunner runner(this->h_.events(), this->h_.models(), this->h_.projection("counts"), quiet());
  for (int round = 0; round < 5; ++round) {
    auto last = this->append(30);
    ASSERT_EQ(runner.wait_for(last, 10s), WaitResult::reached);
    // Processed means committed: the model shows it at once.
    EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
  }
  auto p = runner.progress();
  EXPECT_TRUE(p.live);
  EXPECT_EQ(p.status, ProjectionStatus::following);
  EXPECT_EQ(p.events_applied, 250u);
}

TYPED_TEST(Projections, WaitForTimesOutWhileThePositionIsNotProcessedAndSaysWhenTheRunnerStopped) {
  auto head = this->append(20);
  std::atomic<bool> hold{true};
  ProjectionRunner runner(this->h_.events(), this->h_.models(),
                          this->h_.projection("counts",
                                              [&](const RecordedEvent& e) {
                                                while (hold && e.position.value() == 10)
                                                  std::this_thread::sleep_for(1ms);
                                              }),
                          quiet({.batch_events = 1}));
  ASSERT_EQ(runner.wait_for(Position(9), 10s), WaitResult::reached);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(runner.wait_for(Position(10), 150ms), WaitResult::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 150ms);
  EXPECT_EQ(runner.wait_for(Position(0), 0ms), WaitResult::reached);
  hold = false;
  EXPECT_EQ(runner.wait_for(head, 10s), WaitResult::reached);
  EXPECT_EQ(runner.wait_for(Position(head.value() + 1), 50ms), WaitResult::timeout);
  runner.stop();
  EXPECT_EQ(runner.wait_for(Position(head.value() + 1), 10s), WaitResult::stopped);
}

// A waiter is released by a commit as soon as the runner has applied its position, not at the batch's
// size or time limit and not after further reads: here the handler of the awaited event appends another
// event, whose handler then holds the runner, so only a commit before that next read releases the waiter.
TYPED_TEST(Projections, AWaiterIsReleasedBeforeTheBatchLimitsOrTheNextReadWouldCommit) {
  std::atomic<bool> hold{true};
  Position awaited(this->h_.events().head_position().value() + 10);
  auto p = this->h_.projection("counts", [&](const RecordedEvent& e) {
    if (e.position == awaited) this->h_.events().append("slow-1", ExpectedVersion::any(), {event("Happened")});
    // Bounded, so a failed test cannot leave the runner's thread stuck here.
    for (int i = 0; e.stream == "slow-1" && hold && i < 20000; ++i) std::this_thread::sleep_for(1ms);
  });
  ProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p),
                          quiet({.batch_events = 1'000'000, .batch_interval = std::chrono::hours(1)}));
  ASSERT_EQ(runner.wait_for(Position(0), 10s), WaitResult::reached);
  // The events come after the waiter has begun waiting (ample time for it to get there).
  std::jthread writer([&] {
    std::this_thread::sleep_for(200ms);
    this->append(10);
  });
  EXPECT_EQ(runner.wait_for(awaited, 5s), WaitResult::reached);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events(), std::nullopt, awaited.value()));
  hold = false;
  writer.join();
  EXPECT_EQ(runner.wait_for(this->h_.events().head_position(), 10s), WaitResult::reached);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
}

TYPED_TEST(Projections, AFilteredProjectionReachesPositionsItOnlyScanned) {
  this->append(50, "account");
  EventFilter filter{.category = "account"};
  auto p = this->h_.projection("accounts");
  p.filter = filter;
  ProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p), quiet());
  auto last = this->append(40, "other");  // nothing the projection applies
  EXPECT_EQ(runner.wait_for(last, 10s), WaitResult::reached);
  this->append(10, "account");
  last = this->append(10, "other");
  EXPECT_EQ(runner.wait_for(last, 10s), WaitResult::reached);
  EXPECT_EQ(this->h_.model("accounts"), fold(this->h_.events(), filter));
  runner.stop();
  EXPECT_EQ(this->h_.models().load_state({"accounts", 1, ""})->checkpoint, last) << "the scanned positions are saved";
}

TYPED_TEST(Projections, AHandlerFailureRollsTheBatchBackAndTheRetryAppliesEveryEventOnce) {
  this->append(300);
  FastClock clock;
  std::atomic<int> failures{0};
  auto p = this->h_.projection("counts", [&](const RecordedEvent& e) {
    if (e.position.value() == 170 && failures < 3) {
      ++failures;
      throw std::runtime_error("boom at 170");
    }
  });
  std::vector<std::string> logged;
  std::mutex log_mu;
  ProjectionRunnerOptions o{.batch_events = 100, .retry_initial = 100ms, .retry_max = 250ms, .clock = &clock.clock};
  o.log = [&](std::string_view line) {
    std::lock_guard lock(log_mu);
    logged.emplace_back(line);
  };
  this->run_once(std::move(p), StartMode::rebuild, o);
  EXPECT_EQ(failures, 3);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events())) << "nothing lost, nothing applied twice";
  auto state = this->h_.models().load_state({"counts", 1, ""});
  EXPECT_EQ(state->attempts, 0u) << "reset by the batch that committed";
  EXPECT_NE(state->last_error.find("boom at 170"), std::string::npos) << state->last_error;
  EXPECT_NE(state->last_error.find("position 170"), std::string::npos) << state->last_error;
  std::lock_guard lock(log_mu);
  ASSERT_EQ(logged.size(), 3u);
  // Doubling, capped.
  EXPECT_NE(logged[0].find("(attempt 1); retrying in 100 ms"), std::string::npos) << logged[0];
  EXPECT_NE(logged[1].find("(attempt 2); retrying in 200 ms"), std::string::npos) << logged[1];
  EXPECT_NE(logged[2].find("(attempt 3); retrying in 250 ms"), std::string::npos) << logged[2];
}

TYPED_TEST(Projections, OnErrorStopKeepsTheLastCommittedCheckpointAndRecordsTheError) {
  this->append(300);
  auto p = this->h_.projection("counts", [&](const RecordedEvent& e) {
    if (e.position.value() == 250) throw std::runtime_error("cannot apply 250");
  });
  ProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p),
                          quiet({.start = StartMode::rebuild, .batch_events = 100, .on_error = OnError::stop}));
  ASSERT_TRUE(runner.wait_until_stopped(30s));
  EXPECT_FALSE(runner.running());
  ASSERT_TRUE(runner.error());
  EXPECT_EQ(runner.wait_for(Position(250), 1s), WaitResult::stopped);
  auto state = this->h_.models().load_state({"counts", 1, ""});
  ASSERT_TRUE(state);
  EXPECT_EQ(state->status, ProjectionStatus::failed);
  EXPECT_EQ(state->checkpoint, Position(200)) << "the failed batch (201..250) is not committed";
  EXPECT_EQ(state->attempts, 1u);
  EXPECT_NE(state->last_error.find("cannot apply 250"), std::string::npos);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events(), std::nullopt, 200));
  EXPECT_EQ(runner.progress().status, ProjectionStatus::failed);
}

TYPED_TEST(Projections, MaxAttemptsStopsTheRunnerAfterThatManyFailuresInARow) {
  this->append(20);
  FastClock clock;
  auto p = this->h_.projection("counts", [](const RecordedEvent& e) {
    if (e.position.value() == 5) throw std::runtime_error("always");
  });
  std::atomic<int> retries{0};
  ProjectionRunnerOptions o{.max_attempts = 4, .clock = &clock.clock};
  o.log = [&](std::string_view line) { retries += line.find("retrying in") != std::string_view::npos; };
  ProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p), quiet(o));
  ASSERT_TRUE(runner.wait_until_stopped(30s));
  EXPECT_EQ(retries, 3);
  auto state = this->h_.models().load_state({"counts", 1, ""});
  EXPECT_EQ(state->status, ProjectionStatus::failed);
  EXPECT_EQ(state->attempts, 4u);
  EXPECT_EQ(state->checkpoint, Position(0));
}

TYPED_TEST(Projections, ARestartAfterAFailureResumesFromTheCheckpoint) {
  this->append(100);
  {
    auto p = this->h_.projection("counts", [](const RecordedEvent& e) {
      if (e.position.value() == 60) throw std::runtime_error("bug");
    });
    ProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p),
                            quiet({.start = StartMode::rebuild, .batch_events = 25, .on_error = OnError::stop}));
    ASSERT_TRUE(runner.wait_until_stopped(30s));
  }
  // The bug fixed, the projection resumes where it stopped.
  this->run_once(this->h_.projection("counts"), StartMode::resume);
  EXPECT_EQ(this->h_.model("counts"), fold(this->h_.events()));
  auto state = this->h_.models().load_state({"counts", 1, ""});
  EXPECT_EQ(state->status, ProjectionStatus::stopped);
  EXPECT_EQ(state->attempts, 0u);
  EXPECT_NE(state->last_error.find("bug"), std::string::npos) << "the last error stays for inspection";
}

TYPED_TEST(Projections, VersionsKeepTheirOwnStateRows) {
  this->append(30);
  this->run_once(this->h_.projection("counts"), StartMode::resume);
  auto v2 = this->h_.projection("counts_v2");
  v2.name = "counts";
  v2.version = 2;
  this->append(10);
  std::atomic<int> applied{0};
  auto before = v2.handle;
  v2.handle = [&, before](auto& tx, const RecordedEvent& e) {
    ++applied;
    before(tx, e);
  };
  this->run_once(std::move(v2), StartMode::resume);
  EXPECT_EQ(applied, 40) << "version 2 starts from the first event";
  auto states = this->h_.models().list_states();
  ASSERT_EQ(states.size(), 2u);
  EXPECT_EQ(states[0].key.version, 1u);
  EXPECT_EQ(states[0].checkpoint, Position(30));
  EXPECT_EQ(states[1].key.version, 2u);
  EXPECT_EQ(states[1].checkpoint, Position(40));
}

TYPED_TEST(Projections, ProgressReportsPositionHeadRateAndPrintsLinesWithoutATerminal) {
  auto head = this->append(2000);
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  auto p = this->h_.projection("counts", [](const RecordedEvent&) { std::this_thread::sleep_for(200us); });
  ProjectionRunnerOptions o{.start = StartMode::rebuild, .batch_events = 100};
  o.progress = ProgressDisplay::lines;
  o.progress_stream = out;
  o.progress_interval = 100ms;
  o.log = [](std::string_view) {};
  ProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p), o);
  bool saw_rate = false;
  while (runner.wait_for(head, 50ms) != WaitResult::reached) {
    auto pr = runner.progress();
    EXPECT_LE(pr.position, pr.head);
    if (pr.events_per_second > 0 && pr.eta && pr.head == head) saw_rate = true;
  }
  EXPECT_TRUE(saw_rate) << "a rate and an ETA while rebuilding";
  for (int i = 0; i < 1000 && !runner.progress().live; ++i) std::this_thread::sleep_for(10ms);
  runner.stop();
  std::rewind(out);
  std::string text;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, out)) text.append(buf, n);
  std::fclose(out);
  EXPECT_NE(text.find("projection counts v1 rebuilding: "), std::string::npos) << text;
  EXPECT_NE(text.find("ev/s, ETA "), std::string::npos) << text;
  EXPECT_NE(text.find("caught up at position 2,000"), std::string::npos) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos) << "no bar without a terminal";
}

TYPED_TEST(Projections, ARebuildDrawsABarWhenAskedAndPrintsLinesWhenTheOutputIsNoTerminal) {
  auto head = this->append(2000);
  // Rebuilds from scratch with `display` into a file and returns what was printed.
  auto rebuild = [&](ProgressDisplay display) {
    std::FILE* out = std::tmpfile();
    EXPECT_NE(out, nullptr);
    auto p = this->h_.projection("counts", [](const RecordedEvent&) { std::this_thread::sleep_for(300us); });
    ProjectionRunnerOptions o{.start = StartMode::rebuild, .batch_events = 100, .stop_when_caught_up = true};
    o.progress = display;
    o.progress_stream = out;
    o.progress_interval = 100ms;
    o.log = [](std::string_view) {};
    ProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p), o);
    EXPECT_TRUE(runner.wait_until_stopped(60s));
    std::rewind(out);
    std::string text;
    char buf[4096];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, out)) text.append(buf, n);
    std::fclose(out);
    return text;
  };
  std::string bar = rebuild(ProgressDisplay::bar);
  // Redrawn in place: carriage return, the bar, the line, erase to the end of the line.
  EXPECT_NE(bar.find("\r[#"), std::string::npos) << bar;
  EXPECT_NE(bar.find("] projection counts v1 rebuilding: "), std::string::npos) << bar;
  EXPECT_NE(bar.find("\x1b[K"), std::string::npos) << bar;
  EXPECT_EQ(bar.find('\n'), bar.size() - 1) << "one line in the end: " << bar;
  // The bar is cleared before the closing line, which stays.
  EXPECT_NE(bar.find("\r\x1b[Kprojection counts v1: "), std::string::npos) << bar;
  EXPECT_NE(bar.find(" at position 2,000 "), std::string::npos) << bar;
  // automatic into a file (no terminal): lines, no bar.
  std::string lines = rebuild(ProgressDisplay::automatic);
  EXPECT_EQ(lines.find('\r'), std::string::npos) << lines;
  EXPECT_NE(lines.find("projection counts v1 rebuilding: "), std::string::npos) << lines;
  EXPECT_NE(lines.find(" at position 2,000 "), std::string::npos) << lines;
  (void)head;
}

TYPED_TEST(Projections, ARebuildWithoutAClearHookIsRefused) {
  auto p = this->h_.projection("counts");
  p.clear = nullptr;
  EXPECT_THROW(
      ProjectionRunner(this->h_.events(), this->h_.models(), std::move(p), quiet({.start = StartMode::rebuild})),
      InvalidArgument);
}

// What the transient-error tests run with: batches of 10 events, quick retries, and a runner that would
// stop at the second failure in a row (max_attempts 2).
ProjectionRunnerOptions stopping_at_the_second_attempt(KeptLog& log) {
  ProjectionRunnerOptions o =
      quiet({.batch_events = 10, .batch_interval = 20ms, .retry_initial = 5ms, .retry_max = 50ms, .max_attempts = 2});
  o.log = log.sink();
  return o;
}

// After the transient errors have ended: `runner` reaches `head` still running, never logged that it
// stops, its state row counts no attempts, and the model is the clean pass.
template <class Store>
void expect_the_clean_pass_and_no_stop(ProjectionRunner& runner, Store& models, EventStore& events, Position head,
                                       const KeptLog& log) {
  EXPECT_EQ(runner.wait_for(head, 30s), WaitResult::reached);
  EXPECT_TRUE(runner.running());
  EXPECT_NE(runner.progress().status, ProjectionStatus::failed);
  for (auto& line : log.lines()) EXPECT_EQ(line.find("stopping"), std::string::npos) << line;
  runner.stop();
  EXPECT_FALSE(runner.error());
  auto state = models.load_state({"counts", 1, ""});
  ASSERT_TRUE(state);
  EXPECT_EQ(state->attempts, 0u);
  Model model;
  models.query(SqlModel::select("counts"), {},
               [&](const SqlRow& r) { model[std::string(r.text(0))] = row_text(r.int64(1), r.int64(2), r.int64(3)); });
  EXPECT_EQ(model, fold(events));
}

// As for the partitioned runner: a read-model file another program holds the write lock of (longer than
// the store's busy timeout) fails every batch with a transient StorageError, contention rather than the
// projection's fault. The runner retries with back-off for as long as it lasts without counting towards
// max_attempts (2 here), and finishes the clean pass once the file is free.
TEST(ProjectionsOnSqlite, ABusyReadModelFileIsRetriedWithoutCountingTowardsMaxAttempts) {
  TempDir dir;
  auto events = open_sqlite_store((dir.path() / "events.db").string());
  auto models_path = (dir.path() / "models.db").string();
  SqliteProjectionStore models(models_path, {.busy_timeout_ms = 20});
  KeptLog log;
  ProjectionRunner runner(*events, models, sql_counts<SqliteProjectionTransaction>(),
                          stopping_at_the_second_attempt(log));
  ASSERT_EQ(runner.wait_for(append_round(*events, "A"), 30s), WaitResult::reached);

  SqliteWriteLockHolder other(models_path);
  auto head = append_round(*events, "B");
  for (int i = 0; i < 1000 && log.count("database is locked", "a store failure") < 6; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(log.count("database is locked", "a store failure"), 6u)
      << "the runner stopped retrying while the file was busy";
  other.release();
  expect_the_clean_pass_and_no_stop(runner, models, *events, head, log);
}

#ifdef SOURCED_WITH_POSTGRES
// Transient server errors in a handler's statements (serialization failure 40001, deadlock 40P01, a
// terminated backend 57P01, raised by the server; then a row another session holds, lock not available
// 55P03) are retried by the plain runner for as long as they last, never stopping at max_attempts (2).
TEST(ProjectionsOnPostgres, TransientServerErrorsInAHandlerAreRetriedWithoutCountingTowardsMaxAttempts) {
  auto url = test_pg_url();
  if (!url) GTEST_SKIP() << pg_skip_message();
  PgSchema schema{*url};
  auto events = open_postgres_store(*url, PostgresOptions{.schema = schema.name});
  PostgresProjectionStore models(*url, {.schema = schema.name});
  PgGate gate(*url, schema.name);
  auto p = sql_counts<PostgresProjectionTransaction>(
      [&](PostgresProjectionTransaction& tx, const RecordedEvent& e) { gate.meet(tx, e); });
  KeptLog log;
  ProjectionRunner runner(*events, models, p, stopping_at_the_second_attempt(log));
  append_round(*events, "A");
  events->append("k-3", ExpectedVersion::any(), {event("Gated")});
  auto head = append_round(*events, "B");
  for (int i = 0; i < 1000 && gate.tries() < 8; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(gate.tries(), 8) << "the runner stopped retrying the gated event";
  gate.release();
  expect_the_clean_pass_and_no_stop(runner, models, *events, head, log);
  for (std::string state : PgGate::kStates) {
    EXPECT_GT(log.count(state, "a store failure"), 0u) << "SQLSTATE " << state << " was not retried as a store failure";
  }
}
#endif

}  // namespace
}  // namespace sourced::testing
