#pragma once
// A small account domain for the CQRS tests: events, commands and a decider written as the library
// expects a user to write them.

#include <optional>
#include <string>
#include <variant>

#include "sourced/command.hpp"
#include "sourced/decider.hpp"
#include "sourced/typed_events.hpp"

namespace sourced::testing::bank {

struct Opened {
  std::string owner;
  friend bool operator==(const Opened&, const Opened&) = default;
};
struct Deposited {
  long amount = 0;
  friend bool operator==(const Deposited&, const Deposited&) = default;
};
struct Withdrawn {
  long amount = 0;
  friend bool operator==(const Withdrawn&, const Withdrawn&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Opened, owner)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Deposited, amount)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Withdrawn, amount)

using Events = EventRegistry<Opened, Deposited, Withdrawn>;
inline const Events& events() {
  static const Events registry({"AccountOpened", "MoneyDeposited", "MoneyWithdrawn"});
  return registry;
}

struct Open {
  std::string account;
  std::string owner;
  std::string stream() const { return "account-" + account; }
};
struct Deposit {
  std::string account;
  long amount = 0;
  std::string stream() const { return "account-" + account; }
  std::optional<FieldError> validate() const {
    if (amount <= 0) return FieldError{"amount", "must be positive"};
    return std::nullopt;
  }
};
struct Withdraw {
  std::string account;
  long amount = 0;
  std::string stream() const { return "account-" + account; }
  std::optional<FieldError> validate() const {
    if (account.empty()) return FieldError{"account", "must not be empty"};
    if (amount <= 0) return FieldError{"amount", "must be positive"};
    return std::nullopt;
  }
};

struct Account {
  using Event = Events::Event;
  struct State {
    bool open = false;
    std::string owner;
    long balance = 0;
    long events = 0;  // how many events were folded: snapshots must not lose or repeat any
    friend bool operator==(const State&, const State&) = default;
  };

  static State initial_state() { return {}; }

  static Decision<Event> decide(const Open& c, const State& s) {
    if (s.open) return Rejection{"account " + c.account + " is already open"};
    return Opened{c.owner};
  }
  static Decision<Event> decide(const Deposit& c, const State& s) {
    if (!s.open) return Rejection{"account " + c.account + " is not open"};
    return Deposited{c.amount};
  }
  static Decision<Event> decide(const Withdraw& c, const State& s) {
    if (!s.open) return Rejection{"account " + c.account + " is not open"};
    if (c.amount > s.balance) return Rejection{"insufficient funds"};
    return Withdrawn{c.amount};
  }

  static State evolve(State s, const Event& e) {
    std::visit(overloaded{[&](const Opened& o) {
                            s.open = true;
                            s.owner = o.owner;
                          },
                          [&](const Deposited& d) { s.balance += d.amount; },
                          [&](const Withdrawn& w) { s.balance -= w.amount; }},
               e);
    ++s.events;
    return s;
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Account::State, open, owner, balance, events)

}  // namespace sourced::testing::bank
