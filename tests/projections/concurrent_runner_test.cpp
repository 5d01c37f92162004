// Plain ProjectionRunners of one projection started at once, each with its own connection: the setup must
// not collide in PostgreSQL's catalog, and two runners on one model must neither apply an event twice nor
// move the checkpoint back (the fenced commit).

#include <algorithm>
#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "projections/harness.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

ProjectionRunnerOptions quiet(ProjectionRunnerOptions o = {}) {
  o.progress = ProgressDisplay::none;
  if (!o.log) o.log = [](std::string_view) {};
  return o;
}

#ifdef SOURCED_WITH_POSTGRES
// CREATE TABLE IF NOT EXISTS is not safe under concurrency in PostgreSQL: two sessions that both find the
// table missing both insert it into the catalog, and the second fails on pg_type's unique index. Eight
// threads, each with its own store (its own connections), open a fresh schema and run the same projection
// at once; a setup failure stops the runner (OnError::stop), so any collision shows.
TEST(PostgresProjectionSetup, RunnersStartingAtOnceOnAFreshSchemaAllSetUp) {
  auto url = test_pg_url();
  if (!url) GTEST_SKIP() << pg_skip_message();
  EventsIn events(true);
  for (int i = 0; i < 20; ++i)
    events.store().append("s-" + std::to_string(i % 4), ExpectedVersion::any(), {event("E")});
  constexpr int kThreads = 8;
  for (int round = 0; round < 4; ++round) {
    std::string schema = unique_pg_schema();
    std::latch start(kThreads);
    std::vector<std::string> failures(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        try {
          start.arrive_and_wait();
          PostgresProjectionStore models(*url, {.schema = schema});
          Projection<PostgresProjectionTransaction> p;
          p.name = "counts";
          p.handle = [](PostgresProjectionTransaction&, const RecordedEvent&) {};
          p.setup = [](PostgresProjectionTransaction& tx) {
            tx.execute("CREATE TABLE IF NOT EXISTS counts (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)");
            tx.execute("CREATE TABLE IF NOT EXISTS totals (k TEXT PRIMARY KEY, n BIGINT NOT NULL)");
            tx.execute("CREATE INDEX IF NOT EXISTS counts_n ON counts (n)");
          };
          ProjectionRunner runner(events.store(), models, std::move(p),
                                  quiet({.on_error = OnError::stop, .stop_when_caught_up = true}));
          if (!runner.wait_until_stopped(30s)) {
            failures[t] = "did not stop";
          } else if (auto e = runner.error()) {
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& x) {
              failures[t] = x.what();
            }
          }
        } catch (const std::exception& e) {
          failures[t] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    pg_admin_exec(*url, "DROP SCHEMA IF EXISTS \"" + schema + "\" CASCADE");
    for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << "round " << round << ", thread " << t;
  }
}
#endif

template <class H>
class TwoRunners : public ModelsTest<H> {};

TYPED_TEST_SUITE(TwoRunners, SqlModelStores, ModelStoreNames);

// Two runners of one projection, each with its own store object (its own connection: what two processes
// have), follow the same log while events keep coming, with small batches so their commits interleave.
// Each batch's commit is fenced on the checkpoint it started from, so the slower one rolls back and goes
// on from the other's checkpoint: the model equals one clean pass, and the checkpoint, sampled
// throughout by a third connection, never goes back.
TYPED_TEST(TwoRunners, OnOneModelNeitherAppliesAnEventTwiceNorMovesTheCheckpointBack) {
  auto& events = this->h_.events();
  auto append = [&](int from, int count) {
    for (int i = from; i < from + count; ++i) {
      events.append("s-" + std::to_string(i % 10), ExpectedVersion::any(), {event("E")});
    }
  };
  append(0, 300);
  typename TypeParam::Store second(this->h_.models_location());
  typename TypeParam::Store watcher(this->h_.models_location());
  std::atomic<int> handovers{0};
  auto options = [&] {
    return quiet({.batch_events = 5,
                  .batch_interval = 5ms,
                  .retry_initial = 1ms,
                  .retry_max = 5ms,
                  .log = [&](std::string_view line) {
                    if (line.find("another runner committed") != std::string_view::npos) ++handovers;
                  }});
  };
  std::atomic<bool> sampling{true};
  std::vector<std::string> went_back;
  std::thread sampler([&] {
    std::uint64_t last = 0;
    while (sampling) {
      auto s = watcher.load_state({"counts", 1, ""});
      std::uint64_t now = s ? s->checkpoint.value() : 0;
      if (now < last) went_back.push_back(std::to_string(last) + " -> " + std::to_string(now));
      last = std::max(last, now);
      std::this_thread::sleep_for(1ms);
    }
  });
  {
    ProjectionRunner a(events, this->h_.models(), this->h_.projection("counts"), options());
    ProjectionRunner b(events, second, this->h_.projection("counts"), options());
    for (int burst = 0; burst < 10; ++burst) {
      append(300 + burst * 30, 30);
      std::this_thread::sleep_for(10ms);
    }
    Position head = events.head_position();
    EXPECT_EQ(a.wait_for(head, 60s), WaitResult::reached);
    EXPECT_EQ(b.wait_for(head, 60s), WaitResult::reached);
    a.stop();
    b.stop();
    EXPECT_FALSE(a.error());
    EXPECT_FALSE(b.error());
  }
  sampling = false;
  sampler.join();
  EXPECT_EQ(this->h_.model("counts"), fold(events)) << "an event applied twice (or skipped)";
  auto state = this->h_.models().load_state({"counts", 1, ""});
  ASSERT_TRUE(state);
  EXPECT_EQ(state->checkpoint, events.head_position());
  EXPECT_TRUE(went_back.empty()) << "the checkpoint went back: " << went_back.front();
  EXPECT_GT(handovers, 0) << "the runners never raced: the test shows nothing";
}

}  // namespace
}  // namespace sourced::testing
