// Event handlers on every engine: the retry / skip / park policy against a reference model over random
// runs, idempotency keys, filters, replay of parked events, and a handler process SIGKILLed and restarted
// (every event handled at least once, its side effect done once thanks to the idempotency key).

#include "sourced/event_handler.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include "sourced/persistent_subscription.hpp"
#include "store/engines.hpp"

extern char** environ;

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

class EventHandlers : public ::testing::TestWithParam<EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    store_ = harness_->open();
  }
  // Runs `h` until it has dealt with every event in the store and stops it: a failure of one event, however
  // it ends, is not the end of the runner, which must still be running then, without error. Quick retries;
  // the log is dropped.
  EventHandlerStats run_to_head(EventHandler h) {
    EventHandlerRunner runner(*store_, std::move(h),
                              {.retry_backoff = 1ms, .retry_backoff_max = 4ms, .log = [](std::string_view) {}});
    EXPECT_TRUE(runner.wait_for(store_->head_position(), 10s)) << "the runner stopped or stalled";
    EXPECT_TRUE(runner.running());
    EXPECT_FALSE(runner.error());
    auto stats = runner.stats();
    runner.stop();
    return stats;
  }
  std::unique_ptr<EngineHarness> harness_;
  std::unique_ptr<EventStore> store_;
};

// What a handler does on one delivery, decided by the run's seed: succeed, or throw and have on_failure
// say retry(N), skip or park.
struct Outcome {
  bool ok = true;
  FailureDecision decision;
};

class Script {
 public:
  Script(std::uint32_t seed, int fail_percent) : seed_(seed), fail_percent_(fail_percent) {}
  Outcome at(std::uint64_t position, std::uint32_t attempt) const {
    std::mt19937 rng(seed_ * 1'000'003u + static_cast<std::uint32_t>(position) * 7919u + attempt);
    auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    if (pick(0, 99) >= fail_percent_) return {};
    int a = pick(0, 9);
    if (a < 6) return {false, FailureDecision::retry(static_cast<std::uint32_t>(pick(1, 4)))};
    if (a < 8) return {false, FailureDecision::skip()};
    return {false, FailureDecision::park()};
  }

 private:
  std::uint32_t seed_;
  int fail_percent_;
};

// The reference model: what happens to one event, delivered until it succeeds, is skipped or is parked.
struct Expected {
  std::uint32_t deliveries = 0;
  enum { handled, skipped, parked } end = handled;
};
Expected expect(const Script& script, std::uint64_t position) {
  Expected e;
  for (std::uint32_t attempt = 1;; ++attempt) {
    e.deliveries = attempt;
    Outcome o = script.at(position, attempt);
    if (o.ok) return e;
    if (o.decision.action == NackAction::skip) {
      e.end = Expected::skipped;
      return e;
    }
    if (o.decision.action == NackAction::park || attempt >= o.decision.max_attempts) {
      e.end = Expected::parked;
      return e;
    }
  }
}

struct Call {
  std::uint32_t attempt;
  bool replay;
  std::string key;
};

void run_model(EventStore& store, std::uint32_t seed, const std::string& name) {
  std::mt19937 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Script script(seed, pick(0, 70));
  // Events of the handler's category, and others it must never see.
  std::map<std::uint64_t, RecordedEvent> mine;
  int n = pick(5, 40);
  for (int i = 0; i < n; ++i) {
    bool ours = pick(0, 3) > 0;
    // A category of this run's own: the store is shared by the runs.
    std::string stream = (ours ? "acct" : "other") + std::to_string(seed) + "-" + std::to_string(pick(1, 4));
    auto r = store.append(stream, ExpectedVersion::any(), {event(ours ? "Changed" : "Noise")});
    if (ours) {
      auto reader = store.read_all({.from = r.last_position, .max_count = 1});
      mine.emplace(r.last_position.value(), *reader.next());
    }
  }
  const Position head = store.head_position();

  std::mutex mu;
  std::map<std::uint64_t, std::vector<Call>> calls;
  EventHandler handler{
      .name = name,
      .filter = EventFilter{.category = "acct" + std::to_string(seed)},
      .handle =
          [&](const HandledEvent& h) {
            {
              std::lock_guard lock(mu);
              calls[h.event.position.value()].push_back({h.attempt, h.replay, h.idempotency_key});
            }
            if (!h.replay && !script.at(h.event.position.value(), h.attempt).ok) {
              throw std::runtime_error("failed " + std::to_string(h.event.position.value()));
            }
          },
      .on_failure = [&](const std::exception&,
                        const HandledEvent& h) { return script.at(h.event.position.value(), h.attempt).decision; },
  };
  std::vector<std::string> log;
  EventHandlerOptions options{.retry_backoff = 1ms,
                              .retry_backoff_max = 4ms,
                              .checkpoint_after_acks = static_cast<std::uint32_t>(pick(1, 10)),
                              .log = [&](std::string_view line) { log.emplace_back(line); }};

  EventHandlerStats stats;
  {
    EventHandlerRunner runner(store, handler, options);
    ASSERT_TRUE(runner.wait_for(head, 20s)) << "checkpoint " << runner.stats().checkpoint << ", head " << head.value();
    stats = runner.stats();
    runner.stop();
    ASSERT_FALSE(runner.error());
  }

  std::uint64_t handled = 0, failed = 0, retried = 0, skipped = 0;
  std::set<std::uint64_t> parked;
  for (const auto& [position, e] : mine) {
    Expected x = expect(script, position);
    const auto& got = calls[position];
    ASSERT_EQ(got.size(), x.deliveries) << "deliveries of the event at " << position;
    for (std::uint32_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].attempt, i + 1) << position;
      EXPECT_FALSE(got[i].replay);
      EXPECT_EQ(got[i].key, e.id.to_string()) << "the idempotency key is the event id by default";
    }
    failed += x.deliveries - (x.end == Expected::handled ? 1 : 0);
    retried += x.deliveries - 1;
    if (x.end == Expected::handled) ++handled;
    if (x.end == Expected::skipped) ++skipped;
    if (x.end == Expected::parked) parked.insert(position);
  }
  for (const auto& [position, c] : calls) ASSERT_TRUE(mine.count(position)) << "the filter let " << position << " in";
  EXPECT_EQ(stats.handled, handled);
  EXPECT_EQ(stats.failed, failed);
  EXPECT_EQ(stats.retried, retried);
  EXPECT_EQ(stats.skipped, skipped);
  EXPECT_EQ(stats.parked, parked.size());
  EXPECT_EQ(log.size(), failed) << "one log line per failure";

  // What the store keeps: the checkpoint past everything, the parked events with their attempts and
  // error, and the last failure where `sourced subscriptions` shows it.
  auto info = persistent_subscription_info(store, name);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->checkpoint, head.value());
  EXPECT_EQ(info->parked, parked.size());
  EXPECT_EQ(info->last_error, stats.last_error);
  EXPECT_EQ(info->last_error.empty(), failed == 0);
  auto stored = store.subscriptions().parked(name);
  ASSERT_EQ(stored.size(), parked.size());
  for (const auto& p : stored) {
    ASSERT_TRUE(parked.count(p.key)) << p.key << " parked, not expected to be";
    EXPECT_EQ(p.attempts, expect(script, p.key).deliveries) << p.key;
    const RecordedEvent& e = mine.at(p.key);
    EXPECT_NE(p.error.find(e.stream + "@" + std::to_string(e.version.value())), std::string::npos) << p.error;
    EXPECT_NE(p.error.find("failed " + std::to_string(p.key)), std::string::npos) << p.error;
  }

  // Replayed, the parked events come again (flagged, attempts from 1) and, handled, leave the parked list.
  if (!parked.empty()) {
    ASSERT_EQ(replay_parked_events(store, name), parked.size());
    calls.clear();
    EventHandlerRunner runner(store, handler, options);
    for (auto deadline = std::chrono::steady_clock::now() + 20s;
         runner.stats().handled < parked.size() && std::chrono::steady_clock::now() < deadline;)
      std::this_thread::sleep_for(2ms);
    runner.stop();
    ASSERT_EQ(runner.stats().handled, parked.size());
    for (auto position : parked) {
      ASSERT_EQ(calls[position].size(), 1u) << position;
      EXPECT_TRUE(calls[position][0].replay);
      EXPECT_EQ(calls[position][0].key, mine.at(position).id.to_string());
    }
    EXPECT_EQ(persistent_subscription_info(store, name)->parked, 0u);
  }
}

TEST_P(EventHandlers, RetrySkipAndParkFollowTheReferenceModelOverRandomRuns) {
  const int runs = GetParam().name == "memory" ? 60 : GetParam().name == "sqlite" ? 15 : 8;
  for (int seed = 1; seed <= runs; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    run_model(*store_, static_cast<std::uint32_t>(seed), "handler-" + std::to_string(seed));
    if (HasFatalFailure()) return;
  }
}

TEST_P(EventHandlers, TheIdempotencyKeyFunctionAndAnExistingSubscriptionWithAnotherFilter) {
  store_->append("acct-1", ExpectedVersion::any(), {event("Opened"), event("Changed")});
  std::vector<std::string> keys;
  EventHandler h{
      .name = "keyed",
      .filter = EventFilter{.category = "acct"},
      .handle = [&](const HandledEvent& e) { keys.push_back(e.idempotency_key); },
      .idempotency_key = [](const RecordedEvent& e) { return e.stream + "/" + std::to_string(e.version.value()); }};
  {
    EventHandlerRunner runner(*store_, h);
    ASSERT_TRUE(runner.wait_for(store_->head_position(), 10s));
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"acct-1/1", "acct-1/2"}));
  // Restarted, it resumes after its checkpoint: nothing again.
  {
    EventHandlerRunner runner(*store_, h);
    ASSERT_TRUE(runner.wait_for(store_->head_position(), 10s));
  }
  EXPECT_EQ(keys.size(), 2u);
  h.filter = EventFilter{.category = "other"};
  try {
    EventHandlerRunner runner(*store_, h);
    FAIL() << "a handler whose filter differs from its subscription's started";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(),
                 "event handler keyed: its subscription exists and reads category acct, but the handler asks for "
                 "category other (delete the subscription to start the handler again with the new filter)");
  }
  EventHandler unnamed{.name = "bad name!", .handle = [](const HandledEvent&) {}};
  EXPECT_THROW(EventHandlerRunner(*store_, unnamed), InvalidArgument);
}

TEST_P(EventHandlers, AnOnFailureThatThrowsIsAFailureOfTheEventNotTheEndOfTheRunner) {
  // Review 5, EH-2: the policy itself throws (a bug in it, a lookup that fails). The event is retried as
  // with retry(), the error recorded, and the runner goes on with the next events.
  store_->append("acct-1", ExpectedVersion::any(), {event("Bad"), event("Good")});
  std::mutex mu;
  std::vector<std::string> seen;
  EventHandler h{.name = "policy",
                 .handle =
                     [&](const HandledEvent& e) {
                       {
                         std::lock_guard lock(mu);
                         seen.push_back(e.event.type + "#" + std::to_string(e.attempt));
                       }
                       if (e.event.type == "Bad" && e.attempt < 3) throw std::runtime_error("handler failed");
                     },
                 .on_failure = [](const std::exception&, const HandledEvent&) -> FailureDecision {
                   throw std::runtime_error("policy failed");
                 }};
  auto stats = run_to_head(std::move(h));
  EXPECT_EQ(stats.failed, 2u);
  EXPECT_EQ(stats.retried, 2u);
  EXPECT_NE(stats.last_error.find("handler failed (and on_failure threw: policy failed)"), std::string::npos)
      << stats.last_error;
  std::lock_guard lock(mu);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), "Bad#3"), 1);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), "Good#1"), 1);
}

TEST_P(EventHandlers, AnIdempotencyKeyThatThrowsParksThatEventAndTheRunnerGoesOn) {
  // The key function fails on one event (a field it expects is missing): that event is retried and parked
  // with the error recorded, the handler is never called without its key, and the next event is handled.
  store_->append("acct-1", ExpectedVersion::any(), {event("NoKey"), event("Good")});
  std::mutex mu;
  std::vector<std::string> seen;
  EventHandler h{.name = "keyed_badly",
                 .handle =
                     [&](const HandledEvent& e) {
                       std::lock_guard lock(mu);
                       seen.push_back(e.event.type + "/" + e.idempotency_key);
                     },
                 .idempotency_key = [](const RecordedEvent& e) -> std::string {
                   if (e.type == "NoKey") throw std::runtime_error("no account id");
                   return "key-" + e.type;
                 }};
  auto stats = run_to_head(std::move(h));
  EXPECT_EQ(stats.parked, 1u);
  EXPECT_EQ(stats.handled, 1u);
  EXPECT_NE(stats.last_error.find("idempotency_key threw: no account id"), std::string::npos) << stats.last_error;
  std::lock_guard lock(mu);
  EXPECT_EQ(seen, (std::vector<std::string>{"Good/key-Good"}));
}

TEST_P(EventHandlers, AnExistingSubscriptionThatParksSoonerIsRaisedToTheHandlersPolicy) {
  // Created beforehand (by hand, or by an older program) with max_attempts 1: left as it is, it would park
  // the event after the first failure although the handler asks for three deliveries.
  create_persistent_subscription(*store_, "flaky", {.filter = EventFilter{.category = "acct"}, .max_attempts = 1});
  store_->append("acct-1", ExpectedVersion::any(), {event("Opened")});
  std::mutex mu;
  std::vector<std::uint32_t> attempts;
  std::vector<std::string> logged;
  EventHandler h{.name = "flaky",
                 .filter = EventFilter{.category = "acct"},
                 .handle =
                     [&](const HandledEvent& e) {
                       {
                         std::lock_guard lock(mu);
                         attempts.push_back(e.attempt);
                       }
                       throw std::runtime_error("the mail server is down");
                     },
                 .on_failure = [](const std::exception&, const HandledEvent&) { return FailureDecision::retry(3); }};
  EventHandlerRunner runner(*store_, h,
                            {.retry_backoff = 1ms, .retry_backoff_max = 1ms, .log = [&](std::string_view line) {
                               std::lock_guard lock(mu);
                               logged.emplace_back(line);
                             }});
  for (auto until = std::chrono::steady_clock::now() + 10s;
       runner.stats().parked == 0 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(runner.stats().parked, 1u);
  std::lock_guard lock(mu);
  EXPECT_EQ(attempts, (std::vector<std::uint32_t>{1, 2, 3})) << "the handler's policy, not the old limit";
  ASSERT_FALSE(logged.empty());
  EXPECT_NE(logged.front().find("event handler flaky: its subscription parked events after 1 attempts; raised to"),
            std::string::npos)
      << logged.front();
  EXPECT_GT(persistent_subscription_info(*store_, "flaky")->config.max_attempts, 3u);
}

// A child process; killed with SIGKILL by the test (or waited for).
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  void kill() { ::kill(pid_, SIGKILL); }
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

std::map<std::string, int> count_lines(const std::filesystem::path& p) {
  std::map<std::string, int> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) ++out[line];
  return out;
}

TEST_P(EventHandlers, AHandlerProcessKilledAndRestartedHandlesEveryEventAtLeastOnceAndSendsOnce) {
  auto location = harness_->location();
  if (!location) GTEST_SKIP() << "another process cannot open this engine's store";
  std::set<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    store_->append("order-" + std::to_string(i % 17), ExpectedVersion::any(), {event("Placed"), event("Paid")});
    store_->append("noise-" + std::to_string(i), ExpectedVersion::any(), {event("Noise")});
  }
  for (int s = 0; s < 17; ++s)
    for (const RecordedEvent& e : store_->read_stream("order-" + std::to_string(s))) ids.insert(e.id.to_string());
  const Position head = store_->head_position();
  TempDir dir;
  std::mt19937 rng(GetParam().name.size());
  int kills = 0;
  for (int round = 0; round < 8; ++round) {
    Child worker({EVENT_HANDLER_WORKER, *location, "sender", dir.path().string()});
    ASSERT_TRUE(worker.started());
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(40, 160)(rng)));
    worker.kill();
    worker.wait();
    ++kills;
  }
  Child last({EVENT_HANDLER_WORKER, *location, "sender", dir.path().string(), std::to_string(head.value())});
  ASSERT_EQ(last.wait(), 0) << "the last worker could not finish";

  auto handled = count_lines(dir.path() / "handled");
  auto sent = count_lines(dir.path() / "sent");
  int again = 0;
  for (const auto& id : ids) {
    ASSERT_GE(handled[id], 1) << "event " << id << " never handled";
    ASSERT_EQ(sent[id], 1) << "event " << id << "'s side effect happened " << sent[id] << " times";
    if (handled[id] > 1) ++again;
  }
  EXPECT_EQ(handled.size(), ids.size()) << "the filter let other events in";
  EXPECT_EQ(sent.size(), ids.size());
  // The kills landed mid-way: some events were handled again after a restart (what the key is for).
  std::cout << kills << " kills, " << again << " of " << ids.size() << " events handled more than once\n";
  EXPECT_EQ(persistent_subscription_info(*store_, "sender")->checkpoint, head.value());
}

INSTANTIATE_TEST_SUITE_P(Engines, EventHandlers, ::testing::ValuesIn(all_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
