#pragma once
// The bank's domain, with no I/O: the events of an account, the commands a teller gives, and the Account
// decider that turns one into the other. Everything here is a value type or a pure function; the
// repository (main.cpp) loads, decides and appends, and tests could run it with no store at all
// (sourced/decider_testing.hpp).
//
// An account is the stream `account-ID`. Amounts are whole units of one currency, positive, at most
// kMaxAmount (so no balance overflows).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sourced/command.hpp"
#include "sourced/decider.hpp"
#include "sourced/typed_events.hpp"

namespace bank {

using Amount = std::int64_t;
inline constexpr Amount kMaxAmount = 1'000'000'000'000;

// An account id: 1-40 characters of [a-z0-9_], so `account-ID` is a plain stream id whose category is
// "account". The reason it is not, or nullopt.
inline std::optional<std::string> account_id_problem(std::string_view id) {
  if (id.empty()) return "an account id must not be empty";
  if (id.size() > 40) return fmt::format("account id {} is {} characters long; at most 40", id, id.size());
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      return fmt::format("account id '{}' has '{}'; expected only a-z, 0-9 and _", id, c);
    }
  }
  return std::nullopt;
}

inline std::string account_stream(std::string_view id) { return "account-" + std::string(id); }

// ---- events (stored as JSON under their kEventType) ----

struct AccountOpened {
  static constexpr std::string_view kEventType = "AccountOpened";
  std::string owner;
  bool operator==(const AccountOpened&) const = default;
};
struct MoneyDeposited {
  static constexpr std::string_view kEventType = "MoneyDeposited";
  Amount amount = 0;
  bool operator==(const MoneyDeposited&) const = default;
};
struct MoneyWithdrawn {
  static constexpr std::string_view kEventType = "MoneyWithdrawn";
  Amount amount = 0;
  bool operator==(const MoneyWithdrawn&) const = default;
};
struct AccountClosed {
  static constexpr std::string_view kEventType = "AccountClosed";
  bool operator==(const AccountClosed&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AccountOpened, owner)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(MoneyDeposited, amount)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(MoneyWithdrawn, amount)
inline void to_json(nlohmann::json& j, const AccountClosed&) { j = nlohmann::json::object(); }
inline void from_json(const nlohmann::json&, AccountClosed&) {}

using AccountEvents = sourced::EventRegistry<AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed>;
using AccountEvent = AccountEvents::Event;

// The registry the store's events are encoded and decoded with (one per program; thread-safe to use).
inline const AccountEvents& account_events() {
  static const AccountEvents registry;
  return registry;
}

// ---- commands (each checks its own fields before anything is loaded) ----

namespace detail {
inline std::optional<sourced::FieldError> check_id(const std::string& id) {
  if (auto problem = account_id_problem(id)) return sourced::FieldError{"account", *problem};
  return std::nullopt;
}
inline std::optional<sourced::FieldError> check_amount(Amount amount) {
  if (amount <= 0) return sourced::FieldError{"amount", fmt::format("must be positive, not {}", amount)};
  if (amount > kMaxAmount) return sourced::FieldError{"amount", fmt::format("{} is over {}", amount, kMaxAmount)};
  return std::nullopt;
}
}  // namespace detail

struct OpenAccount {
  static constexpr std::string_view kCommandType = "OpenAccount";
  std::string account;
  std::string owner;
  std::string stream() const { return account_stream(account); }
  std::optional<sourced::FieldError> validate() const {
    if (auto e = detail::check_id(account)) return e;
    if (owner.empty() || owner.size() > 100) return sourced::FieldError{"owner", "must be 1-100 characters"};
    return std::nullopt;
  }
};
struct Deposit {
  static constexpr std::string_view kCommandType = "Deposit";
  std::string account;
  Amount amount = 0;
  std::string stream() const { return account_stream(account); }
  std::optional<sourced::FieldError> validate() const {
    if (auto e = detail::check_id(account)) return e;
    return detail::check_amount(amount);
  }
};
struct Withdraw {
  static constexpr std::string_view kCommandType = "Withdraw";
  std::string account;
  Amount amount = 0;
  std::string stream() const { return account_stream(account); }
  std::optional<sourced::FieldError> validate() const {
    if (auto e = detail::check_id(account)) return e;
    return detail::check_amount(amount);
  }
};
struct CloseAccount {
  static constexpr std::string_view kCommandType = "CloseAccount";
  std::string account;
  std::string stream() const { return account_stream(account); }
  std::optional<sourced::FieldError> validate() const { return detail::check_id(account); }
};

// ---- the decider ----

struct Account {
  using Event = AccountEvent;
  enum class Status { none, open, closed };
  struct State {
    Status status = Status::none;
    std::string owner;
    Amount balance = 0;
  };

  static State initial_state() { return {}; }

  static sourced::Decision<Event> decide(const OpenAccount& c, const State& s) {
    if (s.status != Status::none) return sourced::Rejection{fmt::format("account {} already exists", c.account)};
    return AccountOpened{c.owner};
  }
  static sourced::Decision<Event> decide(const Deposit& c, const State& s) {
    if (auto why = not_open(c.account, s)) return *why;
    if (s.balance > kMaxAmount * 1000 - c.amount) {
      return sourced::Rejection{fmt::format("account {} cannot hold more than {}", c.account, kMaxAmount * 1000)};
    }
    return MoneyDeposited{c.amount};
  }
  static sourced::Decision<Event> decide(const Withdraw& c, const State& s) {
    if (auto why = not_open(c.account, s)) return *why;
    if (c.amount > s.balance) {
      return sourced::Rejection{
          fmt::format("account {} cannot withdraw {}: the balance is {}", c.account, c.amount, s.balance)};
    }
    return MoneyWithdrawn{c.amount};
  }
  // A bank closes an account once it is empty: what is left must be withdrawn (or transferred) first.
  static sourced::Decision<Event> decide(const CloseAccount& c, const State& s) {
    if (auto why = not_open(c.account, s)) return *why;
    if (s.balance != 0) {
      return sourced::Rejection{
          fmt::format("account {} cannot be closed: the balance is {}, not 0", c.account, s.balance)};
    }
    return AccountClosed{};
  }

  static State evolve(State s, const Event& e) {
    std::visit(sourced::overloaded{[&](const AccountOpened& o) {
                                     s.status = Status::open;
                                     s.owner = o.owner;
                                   },
                                   [&](const MoneyDeposited& d) { s.balance += d.amount; },
                                   [&](const MoneyWithdrawn& w) { s.balance -= w.amount; },
                                   [&](const AccountClosed&) { s.status = Status::closed; }},
               e);
    return s;
  }

 private:
  static std::optional<sourced::Rejection> not_open(const std::string& account, const State& s) {
    if (s.status == Status::none) return sourced::Rejection{fmt::format("account {} does not exist", account)};
    if (s.status == Status::closed) return sourced::Rejection{fmt::format("account {} is closed", account)};
    return std::nullopt;
  }
};

}  // namespace bank
