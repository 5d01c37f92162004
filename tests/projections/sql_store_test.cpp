// What only the SQL read-model stores can show: a handler that violates a constraint, a database that is
// locked by someone else, and the model in another database than the events.

#include <thread>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "projections/harness.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

ProjectionRunnerOptions quiet(ProjectionRunnerOptions o = {}) {
  o.progress = ProgressDisplay::none;
  if (!o.log) o.log = [](std::string_view) {};
  return o;
}

template <class H>
class SqlProjections : public ModelsTest<H> {};

TYPED_TEST_SUITE(SqlProjections, SqlModelStores, ModelStoreNames);

TYPED_TEST(SqlProjections, AHandlerThatViolatesAConstraintRollsItsBatchBackAndIsRecorded) {
  for (int i = 0; i < 30; ++i) this->h_.events().append("u-" + std::to_string(i), ExpectedVersion::any(), {event("E")});
  this->h_.events().append("u-3", ExpectedVersion::any(), {event("E")});  // position 31: u-3 again
  using Tx = typename TypeParam::Tx;
  Projection<Tx> p = this->h_.projection("uniq");
  auto upsert = p.handle;
  p.handle = [upsert](Tx& tx, const RecordedEvent& e) {
    upsert(tx, e);
    // A plain INSERT: the second event of a stream violates the primary key.
    tx.execute(std::is_same_v<Tx, SqliteProjectionTransaction> ? "INSERT INTO once (stream) VALUES (?1)"
                                                               : "INSERT INTO once (stream) VALUES ($1)",
               {e.stream});
  };
  auto setup = p.setup;
  p.setup = [setup](Tx& tx) {
    setup(tx);
    tx.execute("CREATE TABLE IF NOT EXISTS once (stream TEXT PRIMARY KEY)");
  };
  ProjectionRunner runner(this->h_.events(), this->h_.models(), std::move(p),
                          quiet({.batch_events = 10, .retry_initial = 1ms, .max_attempts = 3}));
  ASSERT_TRUE(runner.wait_until_stopped(30s));
  auto state = this->h_.models().load_state({"uniq", 1, ""});
  ASSERT_TRUE(state);
  EXPECT_EQ(state->status, ProjectionStatus::failed);
  EXPECT_EQ(state->attempts, 3u);
  EXPECT_EQ(state->checkpoint, Position(30)) << "the batches before it committed";
  EXPECT_NE(state->last_error.find("position 31"), std::string::npos) << state->last_error;
  EXPECT_TRUE(state->last_error.find("UNIQUE") != std::string::npos ||
              state->last_error.find("duplicate key") != std::string::npos)
      << state->last_error;
  EXPECT_EQ(this->h_.model("uniq"), fold(this->h_.events(), std::nullopt, 30)) << "the failed batch left nothing";
  std::int64_t rows = 0;
  this->h_.models().query("SELECT COUNT(*) FROM once", {}, [&](const SqlRow& r) { rows = r.int64(0); });
  EXPECT_EQ(rows, 30);
  ASSERT_TRUE(runner.error());
}

TEST(SqliteProjections, ADatabaseLockedBySomeoneElseIsRetriedUntilItIsFree) {
  SqliteModels h;
  for (int i = 0; i < 50; ++i) h.events().append("s-" + std::to_string(i % 5), ExpectedVersion::any(), {event("E")});
  SqliteProjectionStore models(h.models_path(), {.busy_timeout_ms = 20});
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(h.models_path().c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::atomic<int> logged{0};
  ProjectionRunnerOptions o{.batch_events = 7, .retry_initial = 10ms, .retry_max = 20ms};
  o.progress = ProgressDisplay::none;
  o.log = [&](std::string_view) { ++logged; };
  ProjectionRunner runner(h.events(), models, h.projection("counts"), o);
  std::this_thread::sleep_for(300ms);
  EXPECT_GE(logged, 2) << "failures while the lock is held";
  EXPECT_EQ(runner.progress().position, Position(0));
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  ASSERT_EQ(runner.wait_for(Position(50), 10s), WaitResult::reached);
  runner.stop();
  EXPECT_EQ(h.model("counts"), fold(h.events()));
  auto state = models.load_state({"counts", 1, ""});
  EXPECT_NE(state->last_error.find("locked"), std::string::npos) << state->last_error;
  EXPECT_EQ(state->attempts, 0u);
}

}  // namespace
}  // namespace sourced::testing
