#include "sourced/sqlite_projection_store.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

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
// docs/projections.md documents this table too.
constexpr const char* kErrorTable = R"(
CREATE TABLE IF NOT EXISTS sourced_projection_errors (
  name        TEXT    NOT NULL,
  version     INTEGER NOT NULL,
  partition   TEXT    NOT NULL DEFAULT '',
  position    INTEGER NOT NULL,
  event_id    TEXT    NOT NULL DEFAULT '',
  stream      TEXT    NOT NULL DEFAULT '',
  event_type  TEXT    NOT NULL DEFAULT '',
  message     TEXT    NOT NULL,
  attempts    INTEGER NOT NULL,
  failed_at   TEXT    NOT NULL,
  resolution  TEXT    NOT NULL DEFAULT '',
  resolved_at TEXT,
  PRIMARY KEY (name, version, partition, position)
) WITHOUT ROWID)";

// The fence: the row is written only while its checkpoint is still the one the writer started from, and never
// over a retired row (blue/green: a runner of a version switched away must not bring it back).
constexpr std::string_view kSaveStateIf =
    "INSERT INTO sourced_projections(name, version, partition, checkpoint, status, last_error, attempts, updated_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(name, version, partition) DO UPDATE SET "
    "checkpoint = excluded.checkpoint, status = excluded.status, last_error = excluded.last_error, "
    "attempts = excluded.attempts, updated_at = excluded.updated_at WHERE sourced_projections.checkpoint = ?9 "
    "AND sourced_projections.status <> 'retired'";

constexpr std::string_view kRecordError =
    "INSERT INTO sourced_projection_errors(name, version, partition, position, event_id, stream, event_type, message, "
    "attempts, failed_at, resolution, resolved_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, '', NULL) "
    "ON CONFLICT(name, version, partition, position) DO UPDATE SET event_id = excluded.event_id, "
    "stream = excluded.stream, event_type = excluded.event_type, message = excluded.message, "
    "attempts = sourced_projection_errors.attempts + excluded.attempts, failed_at = excluded.failed_at, "
    "resolution = '', resolved_at = NULL";

constexpr std::string_view kResolveErrors =
    "UPDATE sourced_projection_errors SET resolution = ?4, resolved_at = ?5 "
    "WHERE name = ?1 AND version = ?2 AND partition = ?3 AND resolution = ''";

constexpr std::string_view kErrorColumns =
    "SELECT name, version, partition, position, event_id, stream, event_type, message, attempts, failed_at, "
    "resolution, resolved_at FROM sourced_projection_errors";

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

ProjectionError read_error(const SqlRow& r) {
  ProjectionError e;
  e.key.name = std::string(r.text(0));
  e.key.version = static_cast<std::uint32_t>(r.int64(1));
  e.key.partition = std::string(r.text(2));
  e.position = Position(static_cast<std::uint64_t>(r.int64(3)));
  e.event_id = std::string(r.text(4));
  e.stream = std::string(r.text(5));
  e.event_type = std::string(r.text(6));
  e.message = std::string(r.text(7));
  e.attempts = static_cast<std::uint32_t>(r.int64(8));
  e.failed_at = detail::parse_timestamp(r.text(9)).value_or(Timestamp());
  e.resolution = std::string(r.text(10));
  if (!r.is_null(11)) e.resolved_at = detail::parse_timestamp(r.text(11));
  return e;
}

// Beside the database's real path, so every process opening it through any name locks the same file.
std::string lease_file(const std::string& path) {
  std::error_code ec;
  auto real = std::filesystem::canonical(path, ec);
  return (ec ? path : real.string()) + "-leases";
}

// An OFD lock (held by this open file description, so two leases in one process exclude each other too;
// the kernel drops it when the process dies). The descriptor is close-on-exec: a child cannot keep it.
class FileLease final : public ProjectionLease {
 public:
  explicit FileLease(int fd) : fd_(fd) {}
  ~FileLease() override { ::close(fd_); }
  bool held() override { return true; }

 private:
  int fd_;
};

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
    writer_.exec(kErrorTable);
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

bool SqliteProjectionTransaction::save_state_if(const ProjectionState& s, Position expected) {
  std::string updated = format_timestamp(s.updated_at);
  return execute(kSaveStateIf, {s.key.name, s.key.version, s.key.partition,
                                static_cast<std::int64_t>(s.checkpoint.value()), to_string(s.status), s.last_error,
                                s.attempts, updated, static_cast<std::int64_t>(expected.value())}) == 1;
}

void SqliteProjectionTransaction::record_error(const ProjectionError& e) {
  std::string failed = format_timestamp(e.failed_at);
  execute(kRecordError, {e.key.name, e.key.version, e.key.partition, static_cast<std::int64_t>(e.position.value()),
                         e.event_id, e.stream, e.event_type, e.message, e.attempts, failed});
}

void SqliteProjectionTransaction::resolve_errors(const ProjectionKey& key, std::string_view resolution, Timestamp at) {
  std::string when = format_timestamp(at);
  execute(kResolveErrors, {key.name, key.version, key.partition, resolution, when});
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

std::unique_ptr<ProjectionLease> SqliteProjectionStore::try_lease(const ProjectionKey& key) {
  std::string file = lease_file(impl_->path_);
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    throw StorageError(
        fmt::format("cannot open the lease file '{}' for projection '{}': {}", file, key.name, std::strerror(errno)));
  }
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>((std::uint64_t(1) << 32) + (detail::lease_hash(key) >> 4));
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return std::make_unique<FileLease>(fd);
  int err = errno;
  ::close(fd);
  if (err == EAGAIN || err == EACCES || err == EINTR) return nullptr;
  throw StorageError(fmt::format("cannot lock projection '{}' partition '{}' in '{}': {}", key.name, key.partition,
                                 file, std::strerror(err)));
}

std::vector<ProjectionError> SqliteProjectionStore::list_errors(std::string_view name) {
  std::vector<ProjectionError> out;
  std::lock_guard lock(impl_->read_mu_);
  std::string sql = std::string(kErrorColumns) + (name.empty() ? "" : " WHERE name = ?1") +
                    " ORDER BY name, version, partition, position";
  auto add = [&](const SqlRow& r) { out.push_back(read_error(r)); };
  if (name.empty()) {
    run_query(*impl_->reader_, sql, {}, add);
  } else {
    run_query(*impl_->reader_, sql, {name}, add);
  }
  return out;
}

const std::string& SqliteProjectionStore::path() const { return impl_->path_; }

}  // namespace sourced
