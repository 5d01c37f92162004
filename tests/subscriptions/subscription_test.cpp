// Catch-up subscriptions on every engine: history, caught-up, live, with writers in this process and in
// other processes; filters and checkpoints; the pull API and the runner.

#include "sourced/subscription.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

using Kind = SubscriptionMessage::Kind;
using namespace std::chrono_literals;

class Subscriptions : public ::testing::TestWithParam<EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    store_ = harness_->open();
  }
  EventStore& store() { return *store_; }

  void append_n(std::string_view stream, int n, const std::string& type = "Happened") {
    std::vector<EventData> batch;
    for (int i = 0; i < n; ++i) batch.push_back(event(type));
    store().append(stream, ExpectedVersion::any(), batch);
  }

  // The next message, failing the test when none comes within 10 s.
  static SubscriptionMessage next(CatchUpSubscription& sub) {
    auto m = sub.next(10s);
    if (!m) throw std::runtime_error("no message within 10 s");
    return *m;
  }

  std::unique_ptr<EngineHarness> harness_;
  std::unique_ptr<EventStore> store_;
};

// Runs a store_writer process; join() waits for it and says whether it succeeded.
class WriterProcess {
 public:
  WriterProcess(const std::string& location, const std::string& prefix, int count, int pause_us) {
    std::string cmd = std::string("'") + STORE_WRITER + "' '" + location + "' " + prefix + " " + std::to_string(count) +
                      " " + std::to_string(pause_us) + " >/dev/null";
    thread_ = std::thread([this, cmd] { status_ = std::system(cmd.c_str()); });
  }
  bool join() {
    thread_.join();
    return status_ == 0;
  }

 private:
  std::thread thread_;
  int status_ = -1;
};

int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

TEST_P(Subscriptions, HistoryThenCaughtUpThenLiveWithoutGapOrRepeatWhileOtherProcessesWrite) {
  auto location = harness_->location();
  for (int i = 0; i < 20; ++i) append_n("history-" + std::to_string(i), 100);
  auto sub = subscribe_to_all(store());
  std::uint64_t last = 0;
  auto take = [&](const SubscriptionMessage& m) {
    EXPECT_EQ(m.event->position.value(), last + 1) << "a gap or a repeat after position " << last;
    last = m.event->position.value();
    EXPECT_EQ(m.checkpoint, last);
  };
  for (int i = 0; i < 100; ++i) {
    auto m = next(sub);
    ASSERT_EQ(m.kind, Kind::event);
    take(m);
  }
  // Writers start while the subscriber is in the history, and keep writing across its switch to live.
  std::vector<std::unique_ptr<WriterProcess>> procs;
  std::vector<std::thread> threads;
  constexpr int kPerWriter = 300;
  auto start_writer = [&](const std::string& prefix, int pause_us) {
    if (location) {
      procs.push_back(std::make_unique<WriterProcess>(*location, prefix, kPerWriter, pause_us));
    } else {
      threads.emplace_back([this, prefix, pause_us, n = kPerWriter] {
        for (int i = 0; i < n; ++i) {
          append_n(prefix + "-" + std::to_string(i % 10), 1, "Written");
          std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
        }
      });
    }
  };
  start_writer("xp-a", 300);
  start_writer("xp-b", 300);
  std::this_thread::sleep_for(30ms);
  int caught_up = 0;
  std::uint64_t caught_up_at = 0, live_events = 0;
  constexpr std::uint64_t kTotal = 2000 + 3 * kPerWriter;
  bool third_started = false;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (last < kTotal && std::chrono::steady_clock::now() < deadline) {
    auto m = sub.next(100ms);
    if (!m) continue;
    if (m->kind == Kind::caught_up) {
      ++caught_up;
      caught_up_at = m->checkpoint;
      EXPECT_EQ(m->checkpoint, last);
      if (!third_started) {
        start_writer("xp-c", 100);  // certainly after the switch: its events arrive live
        third_started = true;
      }
      continue;
    }
    if (m->kind != Kind::event) continue;  // a fell_behind and its caught_up are allowed
    take(*m);
    if (caught_up > 0) ++live_events;
  }
  for (auto& p : procs) EXPECT_TRUE(p->join()) << "a writer process failed";
  for (auto& t : threads) t.join();
  EXPECT_EQ(last, kTotal);
  EXPECT_GE(caught_up, 1);
  EXPECT_GE(caught_up_at, 2000u);
  EXPECT_GE(live_events, static_cast<std::uint64_t>(kPerWriter));
  EXPECT_FALSE(sub.next(50ms)) << "nothing after the last event";
}

TEST_P(Subscriptions, AFilteredSubscriptionDeliversMatchesAndReportsCheckpointsThroughOtherEvents) {
  for (int i = 0; i < 50; ++i) {
    append_n("a-" + std::to_string(i % 3), 1, i % 2 ? "Odd" : "Even");
    append_n("b-1", 1);
  }
  auto sub = subscribe_to_all(
      store(), {.filter = EventFilter{.category = "a", .event_types = {"Even"}}, .checkpoint_interval = 100});
  std::vector<std::uint64_t> got;
  for (;;) {
    auto m = next(sub);
    if (m.kind == Kind::caught_up) {
      EXPECT_EQ(m.checkpoint, 100u) << "caught up through the head, past the last match";
      break;
    }
    if (m.kind == Kind::event) got.push_back(m.event->position.value());
  }
  std::vector<std::uint64_t> want;
  for (std::uint64_t p = 1; p <= 100; p += 4) want.push_back(p);
  EXPECT_EQ(got, want);
  append_n("b-2", 1000);
  auto m = next(sub);
  EXPECT_EQ(m.kind, Kind::checkpoint) << "no event matches, but the subscriber's checkpoint moves";
  EXPECT_EQ(m.checkpoint, 1100u);
  EXPECT_FALSE(sub.next(50ms));
  append_n("a-9", 1, "Odd");
  append_n("a-9", 1, "Even");
  m = next(sub);
  ASSERT_EQ(m.kind, Kind::event);
  EXPECT_EQ(m.event->position.value(), 1102u);
  EXPECT_EQ(m.checkpoint, 1102u);
}

TEST_P(Subscriptions, AStreamSubscriptionStartsAfterAVersionAndFollowsOnlyItsStream) {
  append_n("s", 5);
  auto sub = subscribe_to_stream(store(), "s", {.start = SubscriptionStart::after(StreamVersion(2))});
  for (std::uint64_t v = 3; v <= 5; ++v) {
    auto m = next(sub);
    ASSERT_EQ(m.kind, Kind::event);
    EXPECT_EQ(m.event->version.value(), v);
    EXPECT_EQ(m.checkpoint, v);
  }
  EXPECT_EQ(next(sub).kind, Kind::caught_up);
  append_n("other", 3);
  EXPECT_FALSE(sub.next(100ms));
  append_n("s", 1);
  auto m = next(sub);
  ASSERT_EQ(m.kind, Kind::event);
  EXPECT_EQ(m.event->version.value(), 6u);
  // A stream that does not exist yet: caught up at once, then its first event.
  auto later = subscribe_to_stream(store(), "later");
  EXPECT_EQ(next(later).kind, Kind::caught_up);
  append_n("later", 1);
  m = next(later);
  ASSERT_EQ(m.kind, Kind::event);
  EXPECT_EQ(m.event->stream, "later");
  EXPECT_THROW(subscribe_to_stream(store(), "s", {.filter = EventFilter{.category = "s"}}), InvalidArgument);
}

TEST_P(Subscriptions, StartingFromTheEndDeliversOnlyNewEvents) {
  append_n("s", 10);
  auto sub = subscribe_to_all(store(), {.start = SubscriptionStart::end()});
  auto m = next(sub);
  EXPECT_EQ(m.kind, Kind::caught_up);
  EXPECT_EQ(m.checkpoint, 10u);
  append_n("s", 1);
  m = next(sub);
  ASSERT_EQ(m.kind, Kind::event);
  EXPECT_EQ(m.event->position.value(), 11u);
}

// has_buffered(): what a batching consumer (the projection runner) looks at before it commits.
TEST_P(Subscriptions, HasBufferedSaysWhetherTheNextEventIsAlreadyReadFromTheStore) {
  append_n("s", 3);
  auto sub = subscribe_to_all(store());
  EXPECT_FALSE(sub.has_buffered()) << "nothing is read before the first next()";
  for (std::uint64_t p = 1; p <= 3; ++p) {
    auto m = next(sub);
    ASSERT_EQ(m.kind, Kind::event);
    EXPECT_EQ(m.event->position.value(), p);
    EXPECT_EQ(sub.has_buffered(), p < 3) << "after position " << p << " of one page of 3";
  }
  EXPECT_EQ(next(sub).kind, Kind::caught_up);
  append_n("s", 2);
  ASSERT_EQ(next(sub).kind, Kind::event);
  EXPECT_TRUE(sub.has_buffered());
  ASSERT_EQ(next(sub).kind, Kind::event);
  EXPECT_FALSE(sub.has_buffered());
}

TEST_P(Subscriptions, ALiveSubscriberTooFarBehindFallsBehindAndCatchesUpAgain) {
  auto sub = subscribe_to_all(store(), {.max_live_lag = 100});
  EXPECT_EQ(next(sub).kind, Kind::caught_up);
  append_n("s", 500);
  EXPECT_EQ(next(sub).kind, Kind::fell_behind);
  for (std::uint64_t p = 1; p <= 500; ++p) {
    auto m = next(sub);
    ASSERT_EQ(m.kind, Kind::event);
    ASSERT_EQ(m.event->position.value(), p);
  }
  EXPECT_EQ(next(sub).kind, Kind::caught_up);
}

TEST_P(Subscriptions, ALiveStreamSubscriberTooFarBehindFallsBehindButNotForOtherStreams) {
  auto sub = subscribe_to_stream(store(), "s", {.max_live_lag = 100});
  EXPECT_EQ(next(sub).kind, Kind::caught_up);
  append_n("other", 500);
  EXPECT_FALSE(sub.next(100ms)) << "other streams' events put the subscriber behind nothing";
  append_n("s", 500);
  EXPECT_EQ(next(sub).kind, Kind::fell_behind);
  for (std::uint64_t v = 1; v <= 500; ++v) {
    auto m = next(sub);
    ASSERT_EQ(m.kind, Kind::event);
    ASSERT_EQ(m.event->version.value(), v);
  }
  EXPECT_EQ(next(sub).kind, Kind::caught_up);
}

TEST_P(Subscriptions, AStopTokenEndsAWaitForEventsAtOnce) {
  auto sub = subscribe_to_all(store(), {.start = SubscriptionStart::end()});
  EXPECT_EQ(next(sub).kind, Kind::caught_up);
  std::stop_source stop;
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    stop.request_stop();
  });
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(sub.next(60s, stop.get_token()));
  stopper.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "the wait did not see its stop request";
  // An idle runner waits in the store with its stop token: stop() does not wait out its wait.
  SubscriptionRunner runner(subscribe_to_all(store(), {.start = SubscriptionStart::end()}),
                            [](const SubscriptionMessage&) {});
  std::this_thread::sleep_for(200ms);
  t0 = std::chrono::steady_clock::now();
  runner.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

TEST_P(Subscriptions, TheRunnerDeliversInOrderAndStopLeavesNoThreadAndNoLateCall) {
  store().wait_for_events_after(Position(0), 1ms);  // any helper thread of the store starts now
  int threads_before = thread_count();
  std::atomic<std::uint64_t> events{0}, last{0};
  std::atomic<bool> in_handler{false}, out_of_order{false}, late{false};
  std::atomic<bool> stopped{false};
  {
    SubscriptionRunner runner(subscribe_to_all(store()), [&](const SubscriptionMessage& m) {
      if (stopped) late = true;
      in_handler = true;
      if (m.kind == Kind::event) {
        if (m.event->position.value() != last + 1) out_of_order = true;
        last = m.event->position.value();
        ++events;
        if (events == 150) std::this_thread::sleep_for(100ms);  // stop() arrives during this call
      }
      in_handler = false;
    });
    append_n("r", 100);
    for (int i = 0; i < 50; ++i) append_n("r", 1);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (events < 150 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    ASSERT_EQ(events.load(), 150u);
    runner.stop();
    stopped = true;
    EXPECT_FALSE(in_handler) << "stop() returned while the handler ran";
    EXPECT_FALSE(runner.running());
    EXPECT_EQ(runner.error(), nullptr);
    append_n("r", 20);
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_FALSE(late) << "the handler was called after stop()";
  EXPECT_FALSE(out_of_order);
  EXPECT_EQ(events.load(), 150u);
  EXPECT_EQ(thread_count(), threads_before) << "the runner's thread outlived stop()";
}

TEST_P(Subscriptions, TheRunnerStopsOnAHandlerErrorAndKeepsIt) {
  append_n("s", 3);
  SubscriptionRunner runner(subscribe_to_all(store()),
                            [](const SubscriptionMessage&) { throw std::runtime_error("handler failed"); });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (runner.running() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_FALSE(runner.running());
  ASSERT_NE(runner.error(), nullptr);
  EXPECT_THROW(std::rethrow_exception(runner.error()), std::runtime_error);
  runner.stop();
}

TEST_P(Subscriptions, ATombstonedStreamEndsItsSubscriptionWithAnError) {
  append_n("gone", 2);
  auto sub = subscribe_to_stream(store(), "gone");
  EXPECT_EQ(next(sub).kind, Kind::event);
  EXPECT_EQ(next(sub).kind, Kind::event);
  EXPECT_EQ(next(sub).kind, Kind::caught_up);
  store().delete_stream("gone", ExpectedVersion::any(), DeleteMode::tombstone);
  append_n("other", 1);  // wakes the subscriber
  EXPECT_THROW(sub.next(2s), StreamDeleted);
}

TEST_P(Subscriptions, AnotherProcesssCommitsReachALiveSubscriberPromptly) {
  auto location = harness_->location();
  if (!location) GTEST_SKIP() << GetParam().name << " cannot be shared with another process";
  auto sub = subscribe_to_all(store(), {.start = SubscriptionStart::end()});
  ASSERT_EQ(next(sub).kind, Kind::caught_up);
  // Appends 40 ms apart: polling alone (every 50 ms) would take ~25 ms on average to see each one.
  constexpr int kEvents = 30;
  WriterProcess writer(*location, "prompt", kEvents, 40000);
  std::vector<double> latency_ms;
  while (latency_ms.size() < kEvents) {
    auto m = next(sub);
    if (m.kind != Kind::event) continue;
    auto now = std::chrono::steady_clock::now().time_since_epoch();
    auto at = m.event->data.find("\"t\":");
    ASSERT_NE(at, std::string::npos);
    std::int64_t t = std::stoll(m.event->data.substr(at + 4));
    latency_ms.push_back(std::chrono::duration<double, std::milli>(now - std::chrono::nanoseconds(t)).count());
  }
  EXPECT_TRUE(writer.join());
  std::sort(latency_ms.begin(), latency_ms.end());
  EXPECT_LT(latency_ms[kEvents / 2], 12.0) << "median append-to-delivery latency across processes, in ms";
}

INSTANTIATE_TEST_SUITE_P(Engines, Subscriptions, ::testing::ValuesIn(all_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
