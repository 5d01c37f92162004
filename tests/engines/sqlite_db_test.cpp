// The SQLite wrappers under the engine: statements scoped by guards, a cache keyed on the SQL text.
// A real SQLite file, in WAL mode as the store uses it.

#include "engines/sqlite/sqlite_db.hpp"

#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "store/engines.hpp"

namespace sourced::detail::sqlite {
namespace {

using sourced::testing::TempDir;

class SqliteDb : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (dir_.path() / "db.sqlite").string();
    writer_ = std::make_unique<Connection>(path_, false, 100);
    writer_->exec("PRAGMA journal_mode=WAL");
    writer_->exec("CREATE TABLE t (x INTEGER PRIMARY KEY, y TEXT)");
    writer_->exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) "
        "INSERT INTO t SELECT i, 'row ' || i FROM n");
  }

  // Writes more, then asks for a checkpoint that must copy the whole WAL and reset it: SQLite refuses
  // (SQLITE_BUSY) while any connection still reads an older snapshot.
  int truncate_checkpoint() {
    writer_->exec("INSERT INTO t (y) VALUES ('after')");
    int log = -1, copied = -1;
    int rc = sqlite3_wal_checkpoint_v2(writer_->handle(), "main", SQLITE_CHECKPOINT_TRUNCATE, &log, &copied);
    return rc;
  }

  TempDir dir_;
  std::string path_;
  std::unique_ptr<Connection> writer_;
};

TEST_F(SqliteDb, AReaderThatThrowsMidPageReturnsItsConnectionWithoutAnOpenSnapshot) {
  ConnectionPool pool(path_, 1, 100);
  try {
    auto conn = pool.acquire();
    ScopedStatement st = conn->prepare("SELECT x, y FROM t ORDER BY x");
    int rows = 0;
    while (st->step()) {
      if (++rows == 10) throw std::runtime_error("decoding failed mid-page");
    }
  } catch (const std::runtime_error&) {
  }
  // The pool's only connection is idle again; it must not pin the WAL.
  EXPECT_EQ(truncate_checkpoint(), SQLITE_OK) << sqlite3_errmsg(writer_->handle());
  // And it reads again from the start.
  auto conn = pool.acquire();
  ScopedStatement st = conn->prepare("SELECT x, y FROM t ORDER BY x");
  ASSERT_TRUE(st->step());
  EXPECT_EQ(st->int64(0), 1);
}

TEST_F(SqliteDb, ALiveStatementDoesBlockTheCheckpoint) {
  // The check above can fail: a statement left mid-result keeps the snapshot.
  ConnectionPool pool(path_, 1, 100);
  auto conn = pool.acquire();
  ScopedStatement st = conn->prepare("SELECT x, y FROM t ORDER BY x");
  ASSERT_TRUE(st->step());
  EXPECT_EQ(truncate_checkpoint(), SQLITE_BUSY);
}

TEST_F(SqliteDb, TheStatementCacheKeysOnTheTextNotItsAddress) {
  // Two statements built in the same buffer, one after the other: an address key would hand back the
  // first statement for the second text.
  std::string sql = "SELECT count(*) FROM t";
  std::int64_t count = 0;
  {
    ScopedStatement st = writer_->prepare(sql);
    ASSERT_TRUE(st->step());
    count = st->int64(0);
  }
  sql.replace(0, sql.size(), "SELECT max(x) FROM t");
  {
    ScopedStatement st = writer_->prepare(sql);
    ASSERT_TRUE(st->step());
    EXPECT_EQ(st->int64(0), 500);
  }
  EXPECT_EQ(count, 500);
  writer_->exec("DELETE FROM t WHERE x > 100");
  sql = "SELECT count(*) FROM t";
  ScopedStatement again = writer_->prepare(sql);
  ASSERT_TRUE(again->step());
  EXPECT_EQ(again->int64(0), 100);
}

}  // namespace
}  // namespace sourced::detail::sqlite
