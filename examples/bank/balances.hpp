#pragma once
// The balances read model: a projection (sourced/projection.hpp) of the account events into the table
// `bank_balances`, in the same database as the events (the SQLite file, or the store's PostgreSQL schema),
// with the projection's checkpoint saved in the same transaction as the rows.
//
//   bank_balances(account TEXT PRIMARY KEY, owner TEXT, balance BIGINT, status TEXT, version BIGINT)
//
// `version` is the account stream's version the row reflects: an event is applied only when it is newer,
// so replaying an event the row already has changes nothing.
//
// The projection is partitioned by account stream (kBalancesPartitions partitions, each worked by one
// process at a time under a lease; the others see its progress through its state row). A bad event stops
// only its account's partition: the other accounts' balances go on, and `bank projection retry|skip
// balances PARTITION` puts the stopped one back to work.
//
// Balances is not thread-safe; the runner it starts has its own connections and threads.

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "domain.hpp"
#include "sourced/projection.hpp"
#include "sourced/projection_cli.hpp"
#include "sourced/projection_partitions.hpp"
#include "sourced/sqlite_projection_store.hpp"
#include "sourced/store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_projection_store.hpp"
#endif

namespace bank {

inline constexpr std::string_view kBalancesProjection = "balances";
// Fixed for the projection's version: another count needs a new version (or a rebuild).
inline constexpr std::uint32_t kBalancesPartitions = 4;

// One row of the model.
struct BalanceRow {
  std::string account;
  std::string owner;
  Amount balance = 0;
  std::string status;  // "open" or "closed"
  std::int64_t version = 0;
};

// The model in whichever database holds the events.
class Balances {
 public:
  virtual ~Balances() = default;
  // Starts the projection on its own threads: resumes from its checkpoints, catches up, then follows.
  // `options.partitions` is set here.
  virtual std::unique_ptr<sourced::PartitionedProjectionRunner> start(sourced::EventStore& events,
                                                                      sourced::PartitionedRunnerOptions options) = 0;
  // The read-model database (where the rows, the projection's state and its errors are).
  virtual sourced::ProjectionStore& models() = 0;
  // Committed rows only.
  virtual std::optional<BalanceRow> find(const std::string& account) = 0;
  virtual std::vector<BalanceRow> all() = 0;
};

namespace detail {

// The statements, written with PostgreSQL's $N placeholders; SQLite gets ?N.
inline std::string sql_for(std::string sql, bool sqlite) {
  if (sqlite) std::replace(sql.begin(), sql.end(), '$', '?');
  return sql;
}

template <class Tx>
sourced::Projection<Tx> balances_projection(bool sqlite) {
  sourced::Projection<Tx> p;
  p.name = std::string(kBalancesProjection);
  p.filter = sourced::EventFilter{.category = "account"};
  p.setup = [sqlite](Tx& tx) {
    tx.execute(
        sql_for("CREATE TABLE IF NOT EXISTS bank_balances(account TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                "balance BIGINT NOT NULL, status TEXT NOT NULL, version BIGINT NOT NULL)",
                sqlite));
  };
  p.clear = [](Tx& tx) { tx.execute("DELETE FROM bank_balances"); };
  const std::string open = sql_for(
      "INSERT INTO bank_balances(account, owner, balance, status, version) VALUES ($1, $2, 0, 'open', $3) "
      "ON CONFLICT(account) DO NOTHING",
      sqlite);
  const std::string deposit = sql_for(
      "UPDATE bank_balances SET balance = balance + $2, version = $3 WHERE account = $1 AND version < $3", sqlite);
  const std::string withdraw = sql_for(
      "UPDATE bank_balances SET balance = balance - $2, version = $3 WHERE account = $1 AND version < $3", sqlite);
  const std::string close =
      sql_for("UPDATE bank_balances SET status = 'closed', version = $2 WHERE account = $1 AND version < $2", sqlite);
  p.handle = [=](Tx& tx, const sourced::RecordedEvent& e) {
    auto event = account_events().decode(e, sourced::UnknownEventTypes::skip);
    if (!event) return;  // a type this version of the bank does not know: not money
    const std::string account = e.stream.substr(std::string_view("account-").size());
    const auto version = static_cast<std::int64_t>(e.version.value());
    std::visit(sourced::overloaded{
                   [&](const AccountOpened& o) {
                     tx.execute(open, {account, o.owner, version});
                   },
                   [&](const MoneyDeposited& d) {
                     tx.execute(deposit, {account, d.amount, version});
                   },
                   [&](const MoneyWithdrawn& w) {
                     tx.execute(withdraw, {account, w.amount, version});
                   },
                   [&](const AccountClosed&) {
                     tx.execute(close, {account, version});
                   },
               },
               *event);
  };
  return p;
}

template <class Store>
class BalancesIn final : public Balances {
 public:
  template <class... Args>
  BalancesIn(bool sqlite, Args&&... args) : sqlite_(sqlite), models_(std::forward<Args>(args)...) {}

  std::unique_ptr<sourced::PartitionedProjectionRunner> start(sourced::EventStore& events,
                                                              sourced::PartitionedRunnerOptions options) override {
    options.partitions = kBalancesPartitions;
    return std::make_unique<sourced::PartitionedProjectionRunner>(
        events, models_, balances_projection<typename Store::Transaction>(sqlite_), std::move(options));
  }
  sourced::ProjectionStore& models() override { return models_; }
  std::optional<BalanceRow> find(const std::string& account) override {
    std::optional<BalanceRow> out;
    try {
      models_.query(
          sql_for("SELECT account, owner, balance, status, version FROM bank_balances WHERE account = $1", sqlite_),
          {account}, [&](const sourced::SqlRow& r) { out = row(r); });
    } catch (const sourced::StorageError&) {
      if (table_exists()) throw;  // no table yet: the projection never ran, so no account is known
    }
    return out;
  }
  std::vector<BalanceRow> all() override {
    std::vector<BalanceRow> out;
    models_.query("SELECT account, owner, balance, status, version FROM bank_balances ORDER BY account", {},
                  [&](const sourced::SqlRow& r) { out.push_back(row(r)); });
    return out;
  }

 private:
  static BalanceRow row(const sourced::SqlRow& r) {
    return {std::string(r.text(0)), std::string(r.text(1)), r.int64(2), std::string(r.text(3)), r.int64(4)};
  }
  bool table_exists() {
    bool found = false;
    models_.query(sqlite_ ? "SELECT 1 FROM sqlite_master WHERE name = 'bank_balances'"
                          : "SELECT 1 FROM information_schema.tables WHERE table_name = 'bank_balances' "
                            "AND table_schema = current_schema()",
                  {}, [&](const sourced::SqlRow&) { found = true; });
    return found;
  }

  bool sqlite_;
  Store models_;
};

}  // namespace detail

// Whether a store location names PostgreSQL (as sourced::open_store reads it).
inline bool is_postgres_location(std::string_view location) {
  auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return out;
  };
  std::string l = lower(location.substr(0, 13));
  return l.starts_with("postgres://") || l.starts_with("postgresql://");
}

// The SQLite file of a location that is not PostgreSQL ("sqlite:PATH" or PATH).
inline std::string sqlite_path(std::string_view location) {
  if (location.starts_with("sqlite:")) location.remove_prefix(7);
  return std::string(location);
}

// The model beside the events of `location` (the same SQLite file; the same PostgreSQL database and schema:
// the URL's schema= or the store's default, "sourced").
inline std::unique_ptr<Balances> open_balances(std::string_view location) {
  if (is_postgres_location(location)) {
#ifdef SOURCED_WITH_POSTGRES
    return std::make_unique<detail::BalancesIn<sourced::PostgresProjectionStore>>(
        false, std::string(location), sourced::PostgresProjectionOptions{.schema = "sourced"});
#else
    throw sourced::InvalidArgument("this bank was built without PostgreSQL");
#endif
  }
  return std::make_unique<detail::BalancesIn<sourced::SqliteProjectionStore>>(true, sqlite_path(location));
}

// The projection as the library's projection commands (projection_cli.hpp) know it, for whichever
// read-model store they are given (a Balances' models(): SQLite or PostgreSQL).
inline sourced::ProjectionCommandEntry balances_command_entry() {
  auto sqlite = sourced::projection_command_entry<sourced::SqliteProjectionStore>(
      detail::balances_projection<sourced::SqliteProjectionStore::Transaction>(true), kBalancesPartitions);
  sourced::ProjectionCommandEntry entry = sqlite;
#ifdef SOURCED_WITH_POSTGRES
  auto postgres = sourced::projection_command_entry<sourced::PostgresProjectionStore>(
      detail::balances_projection<sourced::PostgresProjectionStore::Transaction>(false), kBalancesPartitions);
  entry.rebuild = [sqlite = sqlite.rebuild, postgres = postgres.rebuild](sourced::EventStore& events,
                                                                         sourced::ProjectionStore& models,
                                                                         sourced::ProgressDisplay progress) {
    (dynamic_cast<sourced::SqliteProjectionStore*>(&models) ? sqlite : postgres)(events, models, progress);
  };
#endif
  return entry;
}

}  // namespace bank
