#include "sourced/sqlite_projection_store.hpp"

#include <mutex>

#include <fmt/format.h>

#include "engines/sqlite/sqlite_db.hpp"
#include "projections/state_rows.hpp"

namespace sourced {
namespace {
using detail::sqlite::Connection;
using detail::sqlite::ScopedStatement;
using detail::sqlite::Statement;

// docs/projections.md documents this table.
constexpr const char* kStateTable = R"(
CREATE TABLE IF NOT EXISTS sourced_projections (
  name       TEXT    NOT NULL,
  version    INTEGER NOT NULL,
  partition  TEXT    NOT NULL DEFAULT '',
  checkpoint INTEGER NOT NULL,
  status     TEXT    NOT NULL,
  last_error TEXT    NOT NULL DEFAULT '',
  attempts   INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT    NOT NULL,
  PRIMARY KEY (name, version, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sourced_projection_active (
  name        TEXT    NOT NULL PRIMARY KEY,
  version     INTEGER NOT NULL,
  switched_at TEXT    NOT NULL
) WITHOUT ROWID)";

// An identifier quoted for SQL: any name, no injection.
std::string quoted(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

constexpr std::string_view kSaveState =
    "INSERT INTO sourced_projections(name, version, partition, checkpoint, status, last_error, attempts, updated_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(name, version, partition) DO UPDATE SET "
    "checkpoint = excluded.checkpoint, status = excluded.status, last_error = excluded.last_error, "
    "attempts = excluded.attempts, updated_at = excluded.updated_at";

constexpr std::string_view kStateColumns =
    "SELECT name, version, partition, checkpoint, status, last_error, attempts, updated_at FROM sourced_projections";

void bind_all(Statement& st, std::initializer_list<SqlValue> params) {
  sqlite3_stmt* h = st.handle();
  int i = 1;
  for (const auto& p : params) {
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::nullptr_t>) {
            st.bind_null(i);
          } else if constexpr (std::is_same_v<T, std::int64_t>) {
            st.bind(i, v);
          } else if constexpr (std::is_same_v<T, double>) {
            sqlite3_bind_double(h, i, v);
          } else if constexpr (std::is_same_v<T, std::string_view>) {
            st.bind_text(i, v);
          } else {
            st.bind_blob(i, v.bytes.data(), v.bytes.size());
          }
        },
        p.get());
    ++i;
  }
}

class Row final : public SqlRow {
 public:
  explicit Row(const Statement& st) : st_(st) {}
  int columns() const override { return sqlite3_column_count(st_.handle()); }
  bool is_null(int c) const override { return st_.is_null(c); }
  std::int64_t int64(int c) const override {
    int type = sqlite3_column_type(st_.handle(), c);
    if (type != SQLITE_INTEGER) {
      throw StorageError(fmt::format("column {} ('{}') of '{}' is not an integer", c,
                                     sqlite3_column_name(st_.handle(), c), sqlite3_sql(st_.handle())));
    }
    return st_.int64(c);
  }
  double real(int c) const override { return sqlite3_column_double(st_.handle(), c); }
  std::string_view text(int c) const override {
    return sqlite3_column_type(st_.handle(), c) == SQLITE_BLOB ? st_.blob(c) : st_.text(c);
  }

 private:
  const Statement& st_;
};

void run_query(Connection& conn, std::string_view sql, std::initializer_list<SqlValue> params,
               const std::function<void(const SqlRow&)>& row) {
  ScopedStatement st = conn.prepare(sql);
  bind_all(*st, params);
  Row r(*st);
  while (st->step()) row(r);
}

ProjectionState read_state(const SqlRow& r, const std::string& path) {
  ProjectionState s;
  s.key.name = std::string(r.text(0));
  s.key.version = static_cast<std::uint32_t>(r.int64(1));
  s.key.partition = std::string(r.text(2));
  s.checkpoint = Position(static_cast<std::uint64_t>(r.int64(3)));
  auto status = parse_projection_status(r.text(4));
  if (!status) {
    throw StorageError(fmt::format("SQLite read-model store '{}': projection '{}' has an unknown status '{}'", path,
                                   s.key.name, r.text(4)));
  }
  s.status = *status;
  s.last_error = std::string(r.text(5));
  s.attempts = static_cast<std::uint32_t>(r.int64(6));
  s.updated_at = detail::parse_timestamp(r.text(7)).value_or(Timestamp());
  return s;
}
}  // namespace

class SqliteProjectionStore::Impl {
 public:
  Impl(const std::string& path, const SqliteProjectionOptions& o)
      : path_(path), writer_(path, false, o.busy_timeout_ms) {
    writer_.exec("PRAGMA journal_mode=WAL");
    writer_.exec(o.durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    writer_.exec("PRAGMA cache_size=-65536");
    writer_.exec(kStateTable);
    reader_ = std::make_unique<Connection>(path, true, o.busy_timeout_ms);
  }

  std::string path_;
  std::mutex write_mu_;  // one transaction at a time on writer_
  Connection writer_;
  std::mutex read_mu_;
  std::unique_ptr<Connection> reader_;
};

class SqliteProjectionTransaction::Impl {
 public:
  explicit Impl(SqliteProjectionStore::Impl& store) : store_(store), lock_(store.write_mu_) {
    // IMMEDIATE: the write lock now, so a handler that reads before it writes cannot fail to upgrade.
    store_.writer_.prepare("BEGIN IMMEDIATE")->run();
  }
  ~Impl() {
    if (!done_) sqlite3_exec(store_.writer_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }

  SqliteProjectionStore::Impl& store_;
  std::unique_lock<std::mutex> lock_;
  bool done_ = false;
};

SqliteProjectionTransaction::SqliteProjectionTransaction(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqliteProjectionTransaction::~SqliteProjectionTransaction() = default;

std::int64_t SqliteProjectionTransaction::execute(std::string_view sql, std::initializer_list<SqlValue> params) {
  auto& conn = impl_->store_.writer_;
  ScopedStatement st = conn.prepare(sql);
  bind_all(*st, params);
  st->run();
  return sqlite3_changes(conn.handle());
}

void SqliteProjectionTransaction::query(std::string_view sql, std::initializer_list<SqlValue> params,
                                        const std::function<void(const SqlRow&)>& row) {
  run_query(impl_->store_.writer_, sql, params, row);
}

sqlite3* SqliteProjectionTransaction::handle() const { return impl_->store_.writer_.handle(); }

void SqliteProjectionTransaction::save_state(const ProjectionState& s) {
  std::string updated = format_timestamp(s.updated_at);
  execute(kSaveState, {s.key.name, s.key.version, s.key.partition, static_cast<std::int64_t>(s.checkpoint.value()),
                       to_string(s.status), s.last_error, s.attempts, updated});
}

void SqliteProjectionTransaction::show_table_as(std::string_view stable, std::string_view table) {
  execute("DROP VIEW IF EXISTS " + quoted(stable));
  execute("CREATE VIEW " + quoted(stable) + " AS SELECT * FROM " + quoted(table));
}

void SqliteProjectionTransaction::drop_table(std::string_view table) {
  execute("DROP TABLE IF EXISTS " + quoted(table));
}

void SqliteProjectionTransaction::save_active_version(std::string_view name, std::uint32_t version) {
  std::string now = format_timestamp(
      Timestamp(std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now())));
  execute(
      "INSERT INTO sourced_projection_active(name, version, switched_at) VALUES (?1, ?2, ?3) "
      "ON CONFLICT(name) DO UPDATE SET version = excluded.version, switched_at = excluded.switched_at",
      {name, version, now});
}

void SqliteProjectionTransaction::commit() {
  if (impl_->done_) throw InvalidArgument("a projection transaction commits once");
  // A failed COMMIT (a deferred constraint, a busy or full disk) leaves the transaction open: the
  // destructor rolls it back.
  impl_->store_.writer_.prepare("COMMIT")->run();
  impl_->done_ = true;
}

SqliteProjectionStore::SqliteProjectionStore(const std::string& path, SqliteProjectionOptions options)
    : impl_(std::make_unique<Impl>(path, options)) {}
SqliteProjectionStore::~SqliteProjectionStore() = default;

std::unique_ptr<ProjectionTransaction> SqliteProjectionStore::begin_transaction() {
  return std::make_unique<SqliteProjectionTransaction>(std::make_unique<SqliteProjectionTransaction::Impl>(*impl_));
}

std::optional<ProjectionState> SqliteProjectionStore::load_state(const ProjectionKey& key) {
  std::optional<ProjectionState> out;
  std::lock_guard lock(impl_->read_mu_);
  run_query(*impl_->reader_, std::string(kStateColumns) + " WHERE name = ?1 AND version = ?2 AND partition = ?3",
            {key.name, key.version, key.partition}, [&](const SqlRow& r) { out = read_state(r, impl_->path_); });
  return out;
}

std::vector<ProjectionState> SqliteProjectionStore::list_states() {
  std::vector<ProjectionState> out;
  std::lock_guard lock(impl_->read_mu_);
  run_query(*impl_->reader_, std::string(kStateColumns) + " ORDER BY name, version, partition", {},
            [&](const SqlRow& r) { out.push_back(read_state(r, impl_->path_)); });
  return out;
}

std::optional<std::uint32_t> SqliteProjectionStore::active_version(std::string_view name) {
  std::optional<std::uint32_t> out;
  std::lock_guard lock(impl_->read_mu_);
  run_query(*impl_->reader_, "SELECT version FROM sourced_projection_active WHERE name = ?1", {name},
            [&](const SqlRow& r) { out = static_cast<std::uint32_t>(r.int64(0)); });
  return out;
}

void SqliteProjectionStore::query(std::string_view sql, std::initializer_list<SqlValue> params,
                                  const std::function<void(const SqlRow&)>& row) {
  std::lock_guard lock(impl_->read_mu_);
  run_query(*impl_->reader_, sql, params, row);
}

const std::string& SqliteProjectionStore::path() const { return impl_->path_; }

}  // namespace sourced
