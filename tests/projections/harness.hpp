#pragma once
// Read-model stores for the projection tests: each harness gives an event store, a read-model store, and
// the same test model on each (one row per stream: events applied, the sum of their positions, the last
// position), so a scenario written once runs on every store and the models compare as text.

#include <array>
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "sourced/memory_projection_store.hpp"
#include "sourced/projection.hpp"
#include "sourced/sqlite_projection_store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_projection_store.hpp"
#endif
#include <gtest/gtest.h>

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

}  // namespace sourced::testing
