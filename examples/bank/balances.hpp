#pragma once
// The balances read model: a projection (sourced/projection.hpp) of the account events into the table
// `bank_balances`, in the same database as the events (the SQLite file, or the store's PostgreSQL schema),
// with the projection's checkpoint saved in the same transaction as the rows.
//
//   bank_balances(account TEXT PRIMARY KEY, owner TEXT, balance BIGINT, status TEXT, version BIGINT)
//
// `version` is the account stream's version the row reflects: an event is applied only when it is newer,
// so the model stays right even if two `bank` processes run the projection at the same moment (each
// command catches it up before it returns): the second one to apply an event changes nothing.
//
// Balances is not thread-safe; the runner it starts has its own connection and thread.

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "domain.hpp"
#include "sourced/projection.hpp"
#include "sourced/sqlite_projection_store.hpp"
#include "sourced/store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_projection_store.hpp"
#endif

namespace bank {

inline constexpr std::string_view kBalancesProjection = "balances";

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
  // Starts the projection on its own thread: resumes from its checkpoint, catches up, then follows.
  virtual std::unique_ptr<sourced::ProjectionRunner> start(sourced::EventStore& events,
                                                           sourced::ProjectionRunnerOptions options) = 0;
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

  std::unique_ptr<sourced::ProjectionRunner> start(sourced::EventStore& events,
                                                   sourced::ProjectionRunnerOptions options) override {
    return std::make_unique<sourced::ProjectionRunner>(
        events, models_, balances_projection<typename Store::Transaction>(sqlite_), std::move(options));
  }
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

}  // namespace bank
