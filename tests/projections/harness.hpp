#pragma once
// Read-model stores for the projection tests: each harness gives an event store, a read-model store, and
// the same test model on each (one row per stream: events applied, the sum of their positions, the last
// position), so a scenario written once runs on every store and the models compare as text.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "sourced/memory_projection_store.hpp"
#include "sourced/projection.hpp"
#include "sourced/sqlite_projection_store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_projection_store.hpp"
#endif
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "store/engines.hpp"

namespace sourced::testing {

using Model = std::map<std::string, std::string>;

// Called by the test model's handler before it writes, so a test can count or fail events.
using BeforeApply = std::function<void(const RecordedEvent&)>;

inline std::string row_text(std::int64_t n, std::int64_t sum, std::int64_t last) {
  return std::to_string(n) + "/" + std::to_string(sum) + "/" + std::to_string(last);
}

// The model built in one clean pass over the log, as the test model's rows (optionally filtered).
inline Model fold(EventStore& store, const std::optional<EventFilter>& filter = std::nullopt,
                  std::uint64_t through = kUnlimited) {
  std::map<std::string, std::array<std::int64_t, 3>> rows;
  for (const auto& e : store.read_all({.filter = filter})) {
    if (e.position.value() > through) break;
    auto& r = rows[e.stream];
    r[0] += 1;
    r[1] += static_cast<std::int64_t>(e.position.value());
    r[2] = static_cast<std::int64_t>(e.position.value());
  }
  Model m;
  for (auto& [k, r] : rows) m[k] = row_text(r[0], r[1], r[2]);
  return m;
}

class MemoryModels {
 public:
  using Store = MemoryProjectionStore;
  using Tx = MemoryProjectionTransaction;
  static constexpr const char* kName = "memory";

  std::optional<std::string> skip_reason() const { return std::nullopt; }
  EventStore& events() { return *events_; }
  Store& models() { return models_; }
  // A fresh object over the same read-model database (the memory store keeps its contents: the nearest
  // thing to a restart it has).
  Store& reopen_models() { return models_; }

  Projection<Tx> projection(std::string name, BeforeApply before = {}) {
    std::string table = name;
    Projection<Tx> p;
    p.name = name;
    p.handle = [table, before](Tx& tx, const RecordedEvent& e) {
      if (before) before(e);
      std::int64_t n = 0, sum = 0;
      if (auto v = tx.get(table, e.stream)) std::sscanf(v->c_str(), "%ld/%ld", &n, &sum);
      tx.put(table, e.stream,
             row_text(n + 1, sum + static_cast<std::int64_t>(e.position.value()),
                      static_cast<std::int64_t>(e.position.value())));
    };
    p.clear = [table](Tx& tx) { tx.clear(table); };
    return p;
  }

  Model model(const std::string& name) {
    Model m;
    for (auto& [k, v] : models_.table(name)) m[k] = v;
    return m;
  }

 private:
  std::unique_ptr<EventStore> events_ = open_memory_store();
  MemoryProjectionStore models_;
};

// The test model in SQL, with ?N placeholders (SQLite) or $N (PostgreSQL: `dollar`).
struct SqlModel {
  static std::string create(const std::string& t) {
    return "CREATE TABLE IF NOT EXISTS " + t +
           " (stream TEXT PRIMARY KEY, n BIGINT NOT NULL, pos_sum BIGINT NOT NULL, last BIGINT NOT NULL)";
  }
  static std::string upsert(const std::string& t, bool dollar) {
    std::string p = dollar ? "$" : "?";
    return "INSERT INTO " + t + " (stream, n, pos_sum, last) VALUES (" + p + "1, 1, " + p + "2, " + p +
           "2) ON CONFLICT (stream) DO UPDATE SET n = " + t + ".n + 1, pos_sum = " + t +
           ".pos_sum + excluded.pos_sum, last = excluded.last";
  }
  static std::string select(const std::string& t) { return "SELECT stream, n, pos_sum, last FROM " + t; }
};

// Where the events of a harness live: a SQLite file of its own, or a fresh PostgreSQL schema.
class EventsIn {
 public:
  explicit EventsIn(bool postgres) {
#ifdef SOURCED_WITH_POSTGRES
    if (postgres) {
      pg_ = std::make_unique<PostgresHarness>();
      if (!pg_->skip_reason()) store_ = pg_->open();
      return;
    }
#endif
    if (!postgres) store_ = open_sqlite_store((dir_.path() / "events.db").string());
  }
  std::optional<std::string> skip_reason() const {
    if (!store_) return std::string("SOURCED_TEST_PG is unset: PostgreSQL tests skipped");
    return std::nullopt;
  }
  EventStore& store() { return *store_; }
  // Where another process opens the same events with open_store().
  std::string location() const {
#ifdef SOURCED_WITH_POSTGRES
    if (pg_) return *pg_->location();
#endif
    return (dir_.path() / "events.db").string();
  }

 private:
  TempDir dir_;
#ifdef SOURCED_WITH_POSTGRES
  std::unique_ptr<PostgresHarness> pg_;
#endif
  std::unique_ptr<EventStore> store_;
};

template <bool kPostgresEvents>
class SqliteModelsT {
 public:
  using Store = SqliteProjectionStore;
  using Tx = SqliteProjectionTransaction;
  static constexpr const char* kName = kPostgresEvents ? "sqlite_models_postgres_events" : "sqlite";

  std::optional<std::string> skip_reason() const { return events_.skip_reason(); }
  EventStore& events() { return events_.store(); }
  std::string events_location() const { return events_.location(); }
  Store& models() { return *models_; }
  Store& reopen_models() {
    models_.reset();
    models_ = std::make_unique<Store>(models_path());
    return *models_;
  }
  std::string models_path() const { return (dir_.path() / "models.db").string(); }
  // Where a helper process opens the same read-model store.
  std::string models_location() const { return models_path(); }

  Projection<Tx> projection(std::string name, BeforeApply before = {}) {
    Projection<Tx> p;
    p.name = name;
    p.handle = [sql = SqlModel::upsert(name, false), before](Tx& tx, const RecordedEvent& e) {
      if (before) before(e);
      tx.execute(sql, {e.stream, e.position.value()});
    };
    p.setup = [sql = SqlModel::create(name)](Tx& tx) { tx.execute(sql); };
    p.clear = [sql = "DELETE FROM " + name](Tx& tx) { tx.execute(sql); };
    return p;
  }

  Model model(const std::string& name) {
    Model m;
    models_->query(SqlModel::select(name), {},
                   [&](const SqlRow& r) { m[std::string(r.text(0))] = row_text(r.int64(1), r.int64(2), r.int64(3)); });
    return m;
  }

 private:
  TempDir dir_;
  EventsIn events_{kPostgresEvents};
  std::unique_ptr<Store> models_ = std::make_unique<Store>(models_path());
};
using SqliteModels = SqliteModelsT<false>;

#ifdef SOURCED_WITH_POSTGRES
template <bool kSqliteEvents>
class PostgresModelsT {
 public:
  using Store = PostgresProjectionStore;
  using Tx = PostgresProjectionTransaction;
  static constexpr const char* kName = kSqliteEvents ? "postgres_models_sqlite_events" : "postgres";

  PostgresModelsT() : url_(test_pg_url()), schema_(unique_pg_schema()) {
    if (url_) models_ = std::make_unique<Store>(*url_, PostgresProjectionOptions{.schema = schema_});
  }
  ~PostgresModelsT() {
    models_.reset();
    if (url_) pg_admin_exec(*url_, "DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE");
  }
  std::optional<std::string> skip_reason() const {
    if (!url_) return pg_skip_message();
    return events_.skip_reason();
  }
  EventStore& events() { return events_.store(); }
  std::string events_location() const { return events_.location(); }
  Store& models() { return *models_; }
  Store& reopen_models() {
    models_.reset();
    models_ = std::make_unique<Store>(*url_, PostgresProjectionOptions{.schema = schema_});
    return *models_;
  }
  std::string models_location() const {
    return *url_ + (url_->find('?') == std::string::npos ? "?" : "&") + "schema=" + schema_;
  }

  Projection<Tx> projection(std::string name, BeforeApply before = {}) {
    Projection<Tx> p;
    p.name = name;
    p.handle = [sql = SqlModel::upsert(name, true), before](Tx& tx, const RecordedEvent& e) {
      if (before) before(e);
      tx.execute(sql, {e.stream, e.position.value()});
    };
    p.setup = [sql = SqlModel::create(name)](Tx& tx) { tx.execute(sql); };
    p.clear = [sql = "DELETE FROM " + name](Tx& tx) { tx.execute(sql); };
    return p;
  }

  Model model(const std::string& name) {
    Model m;
    models_->query(SqlModel::select(name), {},
                   [&](const SqlRow& r) { m[std::string(r.text(0))] = row_text(r.int64(1), r.int64(2), r.int64(3)); });
    return m;
  }

 private:
  std::optional<std::string> url_;
  std::string schema_;
  EventsIn events_{!kSqliteEvents};
  std::unique_ptr<Store> models_;
};
using PostgresModels = PostgresModelsT<false>;
#endif

// The read-model setups typed tests run on (PostgreSQL ones only in a build with it), and the names
// GoogleTest shows for them.
#ifdef SOURCED_WITH_POSTGRES
using AllModelStores = ::testing::Types<MemoryModels, SqliteModels, PostgresModels>;
using SqlModelStores = ::testing::Types<SqliteModels, PostgresModels>;
#else
using AllModelStores = ::testing::Types<MemoryModels, SqliteModels>;
using SqlModelStores = ::testing::Types<SqliteModels>;
#endif
class ModelStoreNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};

// A typed test's fixture that needs nothing but the harness: skipped when its engine is not available.
template <class H>
class ModelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = h_.skip_reason()) GTEST_SKIP() << *why;
  }
  H h_;
};

// A runner's log lines, kept for the test to look at; the sink may be called from any thread.
class KeptLog {
 public:
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view line) {
      std::lock_guard lock(mu_);
      lines_.emplace_back(line);
    };
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mu_);
    return lines_;
  }
  // The lines that say `text`, and `and_text` when given.
  std::size_t count(std::string_view text, std::string_view and_text = {}) const {
    std::lock_guard lock(mu_);
    return static_cast<std::size_t>(std::count_if(lines_.begin(), lines_.end(), [&](const std::string& l) {
      return l.find(text) != l.npos && (and_text.empty() || l.find(and_text) != l.npos);
    }));
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

// The test model (counts) on a SQL read-model store; `before` runs in the handler before its upsert.
template <class Tx>
Projection<Tx> sql_counts(std::function<void(Tx&, const RecordedEvent&)> before = {}) {
  Projection<Tx> p;
  p.name = "counts";
  p.handle = [sql = SqlModel::upsert("counts", !std::is_same_v<Tx, SqliteProjectionTransaction>), before](
                 Tx& tx, const RecordedEvent& e) {
    if (before) before(tx, e);
    tx.execute(sql, {e.stream, e.position.value()});
  };
  p.setup = [sql = SqlModel::create("counts")](Tx& tx) { tx.execute(sql); };
  return p;
}

// One event for each of streams k-0 ... k-9, of type `type`; the last one's position.
inline Position append_round(EventStore& events, const std::string& type) {
  Position last;
  for (int i = 0; i < 10; ++i) {
    last = events.append("k-" + std::to_string(i), ExpectedVersion::any(), {event(type)}).last_position;
  }
  return last;
}

// Another program's write lock on a SQLite file: a transaction of its own (BEGIN IMMEDIATE) from
// construction until release() or the end, so the store's writers meet "database is locked".
class SqliteWriteLockHolder {
 public:
  explicit SqliteWriteLockHolder(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK) << path;
    EXPECT_EQ(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
  }
  void release() { EXPECT_EQ(sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK); }
  ~SqliteWriteLockHolder() { sqlite3_close(db_); }
  SqliteWriteLockHolder(const SqliteWriteLockHolder&) = delete;
  SqliteWriteLockHolder& operator=(const SqliteWriteLockHolder&) = delete;

 private:
  sqlite3* db_ = nullptr;
};

#ifdef SOURCED_WITH_POSTGRES
// A schema of the test server of its own, dropped at the end.
struct PgSchema {
  std::string url, name = unique_pg_schema();
  ~PgSchema() { pg_admin_exec(url, "DROP SCHEMA IF EXISTS \"" + name + "\" CASCADE"); }
};

// Transient server errors for a handler to meet on events of type "Gated" (meet()): the server raises
// serialization failure 40001, deadlock 40P01 and a terminated backend 57P01, as a function would; after
// those the statement locks a row (NOWAIT) that another session holds until release(): lock not
// available, 55P03. tries() counts the gated statements run.
class PgGate {
 public:
  static constexpr std::array<const char*, 4> kStates = {"40001", "40P01", "57P01", "55P03"};

  PgGate(const std::string& url, const std::string& schema) : table_("\"" + schema + "\".gate") {
    EXPECT_EQ(pg_admin_exec(url, "CREATE SCHEMA IF NOT EXISTS \"" + schema + "\"; CREATE TABLE " + table_ +
                                     " (id INT PRIMARY KEY); INSERT INTO " + table_ + " VALUES (1)"),
              "");
    holder_ = PQconnectdb(url.c_str());
    EXPECT_EQ(PQstatus(holder_), CONNECTION_OK) << PQerrorMessage(holder_);
    PQclear(PQexec(holder_, ("BEGIN; SELECT 1 FROM " + table_ + " WHERE id = 1 FOR UPDATE").c_str()));
  }
  ~PgGate() { PQfinish(holder_); }
  PgGate(const PgGate&) = delete;
  PgGate& operator=(const PgGate&) = delete;

  void meet(PostgresProjectionTransaction& tx, const RecordedEvent& e) {
    if (e.type != "Gated") return;
    int k = tries_++;
    if (k < 3) {
      tx.execute(std::string("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '") + kStates[static_cast<std::size_t>(k)] +
                 "', MESSAGE = 'raised for the test'; END $$");
    } else {
      tx.execute("SELECT 1 FROM " + table_ + " WHERE id = 1 FOR UPDATE NOWAIT");
    }
  }
  int tries() const { return tries_; }
  void release() { PQclear(PQexec(holder_, "COMMIT")); }

 private:
  std::string table_;
  PGconn* holder_ = nullptr;
  std::atomic<int> tries_{0};
};
#endif

}  // namespace sourced::testing
