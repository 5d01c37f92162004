#include "sourced/postgres_projection_store.hpp"

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
      std::string sql = fmt::format("CREATE SCHEMA IF NOT EXISTS {}", pg::quote_ident(schema_));
      for (int attempt = 0;; ++attempt) {
        try {
          // Two processes creating the same schema or table at once: one fails on the catalog's unique
          // index; the second attempt finds it there.
          c->exec(sql.c_str(), "creating the read-model schema");
          c->exec(fmt::format("SET search_path TO {}", pg::quote_ident(schema_)).c_str(), "setting the search path");
          c->exec(kStateTable, "creating the projection state table");
          break;
        } catch (const pg::ServerError&) {
          if (attempt >= 2) throw;
        }
      }
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
};

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

const std::string& PostgresProjectionStore::schema() const { return impl_->schema_; }

}  // namespace sourced
