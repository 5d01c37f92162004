#include "sourced/postgres_projection_store.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "engines/postgres/pg_connection.hpp"
#include "projections/state_rows.hpp"

namespace sourced {
namespace {
namespace pg = detail::pg;

constexpr const char* kStateTable = R"(
CREATE TABLE IF NOT EXISTS sourced_projections (
  name       text        NOT NULL,
  version    integer     NOT NULL,
  partition  text        NOT NULL DEFAULT '',
  checkpoint bigint      NOT NULL,
  status     text        NOT NULL,
  last_error text        NOT NULL DEFAULT '',
  attempts   integer     NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (name, version, partition)
);
CREATE TABLE IF NOT EXISTS sourced_projection_active (
  name        text        NOT NULL PRIMARY KEY,
  version     integer     NOT NULL,
  switched_at timestamptz NOT NULL
))";

constexpr const char* kErrorTable = R"(
CREATE TABLE IF NOT EXISTS sourced_projection_errors (
  name        text        NOT NULL,
  version     integer     NOT NULL,
  partition   text        NOT NULL DEFAULT '',
  position    bigint      NOT NULL,
  event_id    text        NOT NULL DEFAULT '',
  stream      text        NOT NULL DEFAULT '',
  event_type  text        NOT NULL DEFAULT '',
  message     text        NOT NULL,
  attempts    integer     NOT NULL,
  failed_at   timestamptz NOT NULL,
  resolution  text        NOT NULL DEFAULT '',
  resolved_at timestamptz,
  PRIMARY KEY (name, version, partition, position)
))";

// The advisory lock (one bigint) that serialises DDL on a read-model database: the stores' own tables and the
// projections' setup hooks. A fixed value, the same in every process and build ("sourced_s" in ASCII).
constexpr std::int64_t kSetupLock = 0x736f75726365645f;

// The fence: the row is written only while its checkpoint is still the one the writer started from, and never
// over a retired row (blue/green: a runner of a version switched away must not bring it back).
constexpr std::string_view kSaveStateIf =
    "INSERT INTO sourced_projections(name, version, partition, checkpoint, status, last_error, attempts, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz) ON CONFLICT (name, version, partition) DO UPDATE SET "
    "checkpoint = excluded.checkpoint, status = excluded.status, last_error = excluded.last_error, "
    "attempts = excluded.attempts, updated_at = excluded.updated_at WHERE sourced_projections.checkpoint = $9 "
    "AND sourced_projections.status <> 'retired' "
    "RETURNING 1";

constexpr std::string_view kRecordError =
    "INSERT INTO sourced_projection_errors(name, version, partition, position, event_id, stream, event_type, message, "
    "attempts, failed_at, resolution, resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::timestamptz, '', "
    "NULL) ON CONFLICT (name, version, partition, position) DO UPDATE SET event_id = excluded.event_id, "
    "stream = excluded.stream, event_type = excluded.event_type, message = excluded.message, "
    "attempts = sourced_projection_errors.attempts + excluded.attempts, failed_at = excluded.failed_at, "
    "resolution = '', resolved_at = NULL";

constexpr std::string_view kResolveErrors =
    "UPDATE sourced_projection_errors SET resolution = $4, resolved_at = $5::timestamptz "
    "WHERE name = $1 AND version = $2 AND partition = $3 AND resolution = ''";

constexpr std::string_view kErrorColumns =
    "SELECT name, version, partition, position, event_id, stream, event_type, message, attempts, "
    "to_char(failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), resolution, "
    "to_char(resolved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM sourced_projection_errors";

constexpr std::string_view kSaveState =
    "INSERT INTO sourced_projections(name, version, partition, checkpoint, status, last_error, attempts, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz) ON CONFLICT (name, version, partition) DO UPDATE SET "
    "checkpoint = excluded.checkpoint, status = excluded.status, last_error = excluded.last_error, "
    "attempts = excluded.attempts, updated_at = excluded.updated_at";

// updated_at comes back in the form format_timestamp() writes, whatever the session's DateStyle.
constexpr std::string_view kStateColumns =
    "SELECT name, version, partition, checkpoint, status, last_error, attempts, "
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM sourced_projections";

bool plain_identifier(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Parameters as libpq wants them: text, except bytes (binary).
struct Encoded {
  std::vector<std::string> storage;
  std::vector<const char*> values;
  std::vector<int> lengths, formats;

  explicit Encoded(std::initializer_list<SqlValue> params) {
    storage.reserve(params.size());
    for (const auto& p : params) {
      int format = 0;
      bool null = false;
      std::visit(
          [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::nullptr_t>) {
              null = true;
              storage.emplace_back();
            } else if constexpr (std::is_same_v<T, std::int64_t>) {
              storage.push_back(std::to_string(v));
            } else if constexpr (std::is_same_v<T, double>) {
              storage.push_back(fmt::format("{}", v));
            } else if constexpr (std::is_same_v<T, std::string_view>) {
              storage.emplace_back(v);
            } else {
              storage.emplace_back(v.bytes);
              format = 1;
            }
          },
          p.get());
      values.push_back(null ? nullptr : storage.back().data());
      lengths.push_back(static_cast<int>(storage.back().size()));
      formats.push_back(format);
    }
    // storage no longer grows: the pointers taken above stay valid (reserve()d).
  }
  int size() const { return static_cast<int>(values.size()); }
};

class Row final : public SqlRow {
 public:
  Row(const PGresult* r, int row) : r_(r), row_(row) {}
  int columns() const override { return PQnfields(r_); }
  bool is_null(int c) const override { return PQgetisnull(r_, row_, c) != 0; }
  std::int64_t int64(int c) const override {
    auto s = text(c);
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (is_null(c) || ec != std::errc() || end != s.data() + s.size()) {
      throw StorageError(fmt::format("column {} ('{}') holds '{}', not an integer", c, PQfname(r_, c), s));
    }
    return v;
  }
  double real(int c) const override { return std::strtod(PQgetvalue(r_, row_, c), nullptr); }
  std::string_view text(int c) const override {
    return {PQgetvalue(r_, row_, c), static_cast<std::size_t>(PQgetlength(r_, row_, c))};
  }

 private:
  const PGresult* r_;
  int row_;
};

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

ProjectionState read_state(const SqlRow& r) {
  ProjectionState s;
  s.key.name = std::string(r.text(0));
  s.key.version = static_cast<std::uint32_t>(r.int64(1));
  s.key.partition = std::string(r.text(2));
  s.checkpoint = Position(static_cast<std::uint64_t>(r.int64(3)));
  auto status = parse_projection_status(r.text(4));
  if (!status) throw StorageError(fmt::format("projection '{}' has an unknown status '{}'", s.key.name, r.text(4)));
  s.status = *status;
  s.last_error = std::string(r.text(5));
  s.attempts = static_cast<std::uint32_t>(r.int64(6));
  s.updated_at = detail::parse_timestamp(r.text(7)).value_or(Timestamp());
  return s;
}
}  // namespace

class PostgresProjectionStore::Impl {
 public:
  Impl(const std::string& url, PostgresProjectionOptions o) : target_(pg::parse_target(url)), options_(std::move(o)) {
    schema_ = target_.schema.value_or(options_.schema);
    if (!plain_identifier(schema_)) {
      throw InvalidArgument(fmt::format("the read-model schema must be a plain identifier, not '{}'", schema_));
    }
    if (options_.pipeline_depth == 0) options_.pipeline_depth = 1;
    writer_ = connect(true);
    reader_ = connect(false);
  }

  std::unique_ptr<pg::Connection> connect(bool create) {
    auto c = std::make_unique<pg::Connection>(target_);
    if (create) {
      // Two sessions creating the same schema or table at once (IF NOT EXISTS included) collide in the
      // catalog and one fails: stores opened together take turns under the setup lock, and each finds
      // what the one before it committed.
      c->exec("BEGIN", "starting the read-model setup");
      c->exec(fmt::format("SELECT pg_advisory_xact_lock({})", kSetupLock).c_str(), "taking the setup lock");
      c->exec(fmt::format("CREATE SCHEMA IF NOT EXISTS {}", pg::quote_ident(schema_)).c_str(),
              "creating the read-model schema");
      c->exec(fmt::format("SET LOCAL search_path TO {}", pg::quote_ident(schema_)).c_str(), "setting the search path");
      c->exec(kStateTable, "creating the projection state table");
      c->exec(kErrorTable, "creating the projection errors table");
      c->exec("COMMIT", "committing the read-model setup");
    }
    c->exec(fmt::format("SET search_path TO {}", pg::quote_ident(schema_)).c_str(), "setting the search path");
    return c;
  }

  pg::Connection& writer() {
    if (!writer_ || !writer_->ok()) {
      writer_.reset();
      prepared_.clear();
      writer_ = connect(false);
    }
    return *writer_;
  }

  pg::Connection& reader() {
    if (!reader_ || !reader_->ok()) {
      reader_.reset();
      reader_ = connect(false);
    }
    return *reader_;
  }

  pg::Target target_;
  PostgresProjectionOptions options_;
  std::string schema_;
  std::mutex write_mu_;
  std::unique_ptr<pg::Connection> writer_;
  std::map<std::string, std::string, std::less<>> prepared_;  // SQL → statement name, on writer_
  bool forget_prepared_ = false;  // a failed pipeline may have dropped a prepare: start afresh
  std::mutex read_mu_;
  std::unique_ptr<pg::Connection> reader_;
  // Leases: one connection holds every lease of this store; a new connection is a new generation, and
  // the leases of an older one are lost (its session, and its locks, are gone).
  std::mutex lease_mu_;
  std::unique_ptr<pg::Connection> lease_conn_;
  std::uint64_t lease_generation_ = 0;
  std::vector<std::int64_t> leased_;
};

namespace {
class AdvisoryLease final : public ProjectionLease {
 public:
  AdvisoryLease(PostgresProjectionStore::Impl& store, std::int64_t lock, std::uint64_t generation)
      : store_(store), lock_(lock), generation_(generation) {}
  ~AdvisoryLease() override {
    std::lock_guard guard(store_.lease_mu_);
    std::erase(store_.leased_, lock_);
    if (store_.lease_generation_ != generation_ || !store_.lease_conn_ || !store_.lease_conn_->ok()) return;
    try {
      pg::Params p;
      p.text(std::to_string(lock_));
      store_.lease_conn_->query("SELECT pg_advisory_unlock($1::int8)", p, pg::Format::text, "releasing a lease");
    } catch (const Error&) {
      // The session is gone, and the lock with it.
    }
  }
  bool held() override {
    std::lock_guard guard(store_.lease_mu_);
    if (store_.lease_generation_ != generation_ || !store_.lease_conn_) return false;
    try {
      store_.lease_conn_->exec("SELECT 1", "checking a lease");
      return true;
    } catch (const Error&) {
      return false;
    }
  }

 private:
  PostgresProjectionStore::Impl& store_;
  std::int64_t lock_;
  std::uint64_t generation_;
};
}  // namespace

// One transaction in pipeline mode: statements are sent without waiting; sync() sends a Sync and reads
// every result up to it, keeping the first error. After an error the server skips what follows up to the
// Sync and the transaction is aborted, so the first error is the one that counts.
class PostgresProjectionTransaction::Impl {
 public:
  explicit Impl(PostgresProjectionStore::Impl& store) : store_(store), lock_(store.write_mu_) {
    auto& conn = store_.writer();
    if (store_.forget_prepared_) {
      conn.exec("DEALLOCATE ALL", "resetting prepared statements");
      store_.prepared_.clear();
      store_.forget_prepared_ = false;
    }
    conn_ = conn.handle();
    if (PQenterPipelineMode(conn_) != 1) fail_connection("entering pipeline mode");
    in_pipeline_ = true;
    send_plain("BEGIN");
  }

  ~Impl() {
    if (!in_pipeline_) return;
    if (!done_) {
      store_.forget_prepared_ = true;
      try {
        error_.reset();
        send_plain("ROLLBACK");
        sync(nullptr);
      } catch (...) {
        // The connection is broken: it is replaced at the next transaction.
      }
    }
    if (PQexitPipelineMode(conn_) != 1) store_.writer_.reset();
  }

  void execute(std::string_view sql, std::initializer_list<SqlValue> params) {
    Encoded p(params);
    const std::string& name = statement(sql, p.size());
    if (PQsendQueryPrepared(conn_, name.c_str(), p.size(), p.values.data(), p.lengths.data(), p.formats.data(), 0) !=
        1) {
      fail_connection("queueing a statement");
    }
    if (++queued_ >= store_.options_.pipeline_depth) sync(nullptr);
  }

  void query(std::string_view sql, std::initializer_list<SqlValue> params,
             const std::function<void(const SqlRow&)>& row) {
    Encoded p(params);
    const std::string& name = statement(sql, p.size());
    if (PQsendQueryPrepared(conn_, name.c_str(), p.size(), p.values.data(), p.lengths.data(), p.formats.data(), 0) !=
        1) {
      fail_connection("queueing a query");
    }
    sync(&row);
  }

  void commit() {
    if (done_) throw InvalidArgument("a projection transaction commits once");
    send_plain("COMMIT");
    sync(nullptr);  // throws the first error: COMMIT of an aborted transaction only rolls back
    done_ = true;
  }

 private:
  const std::string& statement(std::string_view sql, int params) {
    auto it = store_.prepared_.find(sql);
    if (it != store_.prepared_.end()) return it->second;
    std::string name = "sourced_p" + std::to_string(store_.prepared_.size());
    if (PQsendPrepare(conn_, name.c_str(), std::string(sql).c_str(), params, nullptr) != 1) {
      fail_connection("queueing a prepare");
    }
    ++queued_;
    return store_.prepared_.emplace(std::string(sql), std::move(name)).first->second;
  }

  void send_plain(const char* sql) {
    if (PQsendQueryParams(conn_, sql, 0, nullptr, nullptr, nullptr, nullptr, 0) != 1) fail_connection(sql);
    ++queued_;
  }

  void sync(const std::function<void(const SqlRow&)>* row) {
    if (PQpipelineSync(conn_) != 1) fail_connection("sending a pipeline sync");
    int empty = 0;
    for (;;) {
      PGresult* r = PQgetResult(conn_);
      if (!r) {
        // The end of one statement's results; two in a row with a dead link means nothing more comes.
        if (PQstatus(conn_) != CONNECTION_OK || ++empty > 2 * static_cast<int>(queued_) + 4) {
          fail_connection("reading pipelined results");
        }
        continue;
      }
      pg::Result guard(r);
      auto st = PQresultStatus(r);
      if (st == PGRES_PIPELINE_SYNC) break;
      if (st == PGRES_FATAL_ERROR && !error_) {
        const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        const char* msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        const char* detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
        error_.emplace(fmt::format("PostgreSQL read-model store (schema {}): {}{}{} (SQLSTATE {})", store_.schema_,
                                   msg ? msg : "error", detail ? ": " : "", detail ? detail : "", state ? state : "?"),
                       state ? state : "");
      } else if (st == PGRES_TUPLES_OK && row && *row && !error_) {
        for (int i = 0; i < PQntuples(r); ++i) (*row)(Row(r, i));
      }
    }
    queued_ = 0;
    if (error_) {
      store_.forget_prepared_ = true;
      throw *error_;
    }
  }

  [[noreturn]] void fail_connection(std::string_view what) {
    std::string why = PQerrorMessage(conn_);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    store_.forget_prepared_ = true;
    throw ConnectionError(fmt::format("PostgreSQL read-model store at {}: {} failed: {}", store_.target_.display, what,
                                      why.empty() ? "the connection is broken" : why));
  }

 public:
  PostgresProjectionStore::Impl& store_;

 private:
  std::unique_lock<std::mutex> lock_;
  PGconn* conn_ = nullptr;
  bool in_pipeline_ = false;
  bool done_ = false;
  std::size_t queued_ = 0;
  std::optional<pg::ServerError> error_;
};

PostgresProjectionTransaction::PostgresProjectionTransaction(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PostgresProjectionTransaction::~PostgresProjectionTransaction() = default;

void PostgresProjectionTransaction::execute(std::string_view sql, std::initializer_list<SqlValue> params) {
  impl_->execute(sql, params);
}

void PostgresProjectionTransaction::query(std::string_view sql, std::initializer_list<SqlValue> params,
                                          const std::function<void(const SqlRow&)>& row) {
  impl_->query(sql, params, row);
}

void PostgresProjectionTransaction::save_state(const ProjectionState& s) {
  std::string updated = format_timestamp(s.updated_at);
  execute(kSaveState, {s.key.name, s.key.version, s.key.partition, static_cast<std::int64_t>(s.checkpoint.value()),
                       to_string(s.status), s.last_error, s.attempts, updated});
}

void PostgresProjectionTransaction::commit() { impl_->commit(); }

void PostgresProjectionTransaction::show_table_as(std::string_view stable, std::string_view table) {
  execute("DROP VIEW IF EXISTS " + pg::quote_ident(stable));
  execute("CREATE VIEW " + pg::quote_ident(stable) + " AS SELECT * FROM " + pg::quote_ident(table));
}

void PostgresProjectionTransaction::drop_table(std::string_view table) {
  execute("DROP TABLE IF EXISTS " + pg::quote_ident(table));
}

void PostgresProjectionTransaction::save_active_version(std::string_view name, std::uint32_t version) {
  execute(
      "INSERT INTO sourced_projection_active(name, version, switched_at) VALUES ($1, $2, now()) "
      "ON CONFLICT (name) DO UPDATE SET version = excluded.version, switched_at = excluded.switched_at",
      {name, version});
}

void PostgresProjectionTransaction::lock_for_setup() {
  execute("SELECT pg_advisory_xact_lock($1::int8)", {kSetupLock});
}

bool PostgresProjectionTransaction::save_state_if(const ProjectionState& s, Position expected) {
  std::string updated = format_timestamp(s.updated_at);
  bool written = false;
  impl_->query(kSaveStateIf,
               {s.key.name, s.key.version, s.key.partition, static_cast<std::int64_t>(s.checkpoint.value()),
                to_string(s.status), s.last_error, s.attempts, updated, static_cast<std::int64_t>(expected.value())},
               [&](const SqlRow&) { written = true; });
  return written;
}

void PostgresProjectionTransaction::record_error(const ProjectionError& e) {
  std::string failed = format_timestamp(e.failed_at);
  execute(kRecordError, {e.key.name, e.key.version, e.key.partition, static_cast<std::int64_t>(e.position.value()),
                         e.event_id, e.stream, e.event_type, e.message, e.attempts, failed});
}

void PostgresProjectionTransaction::resolve_errors(const ProjectionKey& key, std::string_view resolution,
                                                   Timestamp at) {
  std::string when = format_timestamp(at);
  execute(kResolveErrors, {key.name, key.version, key.partition, resolution, when});
}

PostgresProjectionStore::PostgresProjectionStore(const std::string& url, PostgresProjectionOptions options)
    : impl_(std::make_unique<Impl>(url, std::move(options))) {}
PostgresProjectionStore::~PostgresProjectionStore() = default;

std::unique_ptr<ProjectionTransaction> PostgresProjectionStore::begin_transaction() {
  return std::make_unique<PostgresProjectionTransaction>(std::make_unique<PostgresProjectionTransaction::Impl>(*impl_));
}

void PostgresProjectionStore::query(std::string_view sql, std::initializer_list<SqlValue> params,
                                    const std::function<void(const SqlRow&)>& row) {
  std::lock_guard lock(impl_->read_mu_);
  auto& conn = impl_->reader();
  Encoded p(params);
  PGresult* r = PQexecParams(conn.handle(), std::string(sql).c_str(), p.size(), nullptr, p.values.data(),
                             p.lengths.data(), p.formats.data(), 0);
  pg::Result guard(r);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string why = PQerrorMessage(conn.handle());
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    if (!conn.ok()) throw ConnectionError(fmt::format("PostgreSQL read-model store: query failed: {}", why));
    throw pg::ServerError(fmt::format("PostgreSQL read-model store (schema {}): {}", impl_->schema_, why),
                          state ? state : "");
  }
  for (int i = 0; i < PQntuples(r); ++i) row(Row(r, i));
}

std::optional<ProjectionState> PostgresProjectionStore::load_state(const ProjectionKey& key) {
  std::optional<ProjectionState> out;
  query(std::string(kStateColumns) + " WHERE name = $1 AND version = $2 AND partition = $3",
        {key.name, key.version, key.partition}, [&](const SqlRow& r) { out = read_state(r); });
  return out;
}

std::vector<ProjectionState> PostgresProjectionStore::list_states() {
  std::vector<ProjectionState> out;
  query(std::string(kStateColumns) + " ORDER BY name, version, partition", {},
        [&](const SqlRow& r) { out.push_back(read_state(r)); });
  return out;
}

std::optional<std::uint32_t> PostgresProjectionStore::active_version(std::string_view name) {
  std::optional<std::uint32_t> out;
  query("SELECT version FROM sourced_projection_active WHERE name = $1", {name},
        [&](const SqlRow& r) { out = static_cast<std::uint32_t>(r.int64(0)); });
  return out;
}

std::unique_ptr<ProjectionLease> PostgresProjectionStore::try_lease(const ProjectionKey& key) {
  auto& s = *impl_;
  auto lock = static_cast<std::int64_t>(detail::stable_hash(s.schema_, detail::lease_hash(key)));
  std::lock_guard guard(s.lease_mu_);
  // Session locks are re-entrant: this store's own leases exclude each other here.
  if (std::find(s.leased_.begin(), s.leased_.end(), lock) != s.leased_.end()) return nullptr;
  if (!s.lease_conn_ || !s.lease_conn_->ok()) {
    s.lease_conn_.reset();
    s.leased_.clear();
    ++s.lease_generation_;
    s.lease_conn_ = std::make_unique<pg::Connection>(s.target_);
  }
  pg::Params p;
  p.text(std::to_string(lock));
  pg::Result r = s.lease_conn_->query("SELECT pg_try_advisory_lock($1::int8)", p, pg::Format::text,
                                      "taking the lease of projection " + key.name + " partition " + key.partition);
  if (!r.boolean(0, 0)) return nullptr;
  s.leased_.push_back(lock);
  return std::make_unique<AdvisoryLease>(s, lock, s.lease_generation_);
}

std::vector<ProjectionError> PostgresProjectionStore::list_errors(std::string_view name) {
  std::vector<ProjectionError> out;
  std::string sql = std::string(kErrorColumns) + (name.empty() ? "" : " WHERE name = $1") +
                    " ORDER BY name, version, partition, position";
  auto add = [&](const SqlRow& r) { out.push_back(read_error(r)); };
  if (name.empty()) {
    query(sql, {}, add);
  } else {
    query(sql, {name}, add);
  }
  return out;
}

const std::string& PostgresProjectionStore::schema() const { return impl_->schema_; }

}  // namespace sourced
