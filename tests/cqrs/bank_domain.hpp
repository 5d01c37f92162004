#pragma once
// A small account domain for the CQRS tests: events, commands and a decider written as the library
// expects a user to write them.

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "sourced/command.hpp"
#include "sourced/decider.hpp"
#include "sourced/process_manager.hpp"
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
struct Closed {
  friend bool operator==(const Closed&, const Closed&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Opened, owner)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Deposited, amount)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Withdrawn, amount)
inline void to_json(nlohmann::json& j, const Closed&) { j = nlohmann::json::object(); }
inline void from_json(const nlohmann::json&, Closed&) {}

using Events = EventRegistry<Opened, Deposited, Withdrawn, Closed>;
inline const Events& events() {
  static const Events registry({"AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"});
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

struct Close {
  std::string account;
  std::string stream() const { return "account-" + account; }
};

struct Account {
  using Event = Events::Event;
  struct State {
    bool open = false;
    std::string owner;
    long balance = 0;
    long events = 0;  // how many events were folded: snapshots must not lose or repeat any
    bool closed = false;
    friend bool operator==(const State&, const State&) = default;
  };

  static State initial_state() { return {}; }

  static Decision<Event> decide(const Open& c, const State& s) {
    if (s.open) return Rejection{"account " + c.account + " is already open"};
    return Opened{c.owner};
  }
  static Decision<Event> decide(const Deposit& c, const State& s) {
    if (!s.open) return Rejection{"account " + c.account + " is not open"};
    if (s.closed) return Rejection{"account " + c.account + " is closed"};
    return Deposited{c.amount};
  }
  static Decision<Event> decide(const Withdraw& c, const State& s) {
    if (!s.open) return Rejection{"account " + c.account + " is not open"};
    if (s.closed) return Rejection{"account " + c.account + " is closed"};
    if (c.amount > s.balance) return Rejection{"insufficient funds"};
    return Withdrawn{c.amount};
  }
  static Decision<Event> decide(const Close& c, const State& s) {
    if (!s.open) return Rejection{"account " + c.account + " is not open"};
    if (s.closed) return std::vector<Event>{};  // closing twice changes nothing
    return Closed{};
  }

  static State evolve(State s, const Event& e) {
    std::visit(overloaded{[&](const Opened& o) {
                            s.open = true;
                            s.owner = o.owner;
                          },
                          [&](const Deposited& d) { s.balance += d.amount; },
                          [&](const Withdrawn& w) { s.balance -= w.amount; }, [&](const Closed&) { s.closed = true; }},
               e);
    ++s.events;
    return s;
  }
};
// With defaults: snapshots written before `closed` existed still load.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Account::State, open, owner, balance, events, closed)

// Transfers: a Transfer aggregate (stream transfer-<id>) records what a transfer asked for and how it
// ended; the TransferProcess process manager moves the money: debit the source, credit the target, and
// refund the source when the credit is rejected (the target is closed).
struct TransferRequested {
  std::string transfer;
  std::string from;
  std::string to;
  long amount = 0;
  friend bool operator==(const TransferRequested&, const TransferRequested&) = default;
};
struct CreditRejected {
  std::string reason;
  friend bool operator==(const CreditRejected&, const CreditRejected&) = default;
};
struct TransferCompleted {
  friend bool operator==(const TransferCompleted&, const TransferCompleted&) = default;
};
struct TransferCompensated {
  friend bool operator==(const TransferCompensated&, const TransferCompensated&) = default;
};
struct TransferFailed {
  std::string reason;
  friend bool operator==(const TransferFailed&, const TransferFailed&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TransferRequested, transfer, from, to, amount)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CreditRejected, reason)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TransferFailed, reason)
inline void to_json(nlohmann::json& j, const TransferCompleted&) { j = nlohmann::json::object(); }
inline void from_json(const nlohmann::json&, TransferCompleted&) {}
inline void to_json(nlohmann::json& j, const TransferCompensated&) { j = nlohmann::json::object(); }
inline void from_json(const nlohmann::json&, TransferCompensated&) {}

using TransferEvents =
    EventRegistry<TransferRequested, CreditRejected, TransferCompleted, TransferCompensated, TransferFailed>;
inline const TransferEvents& transfer_events() {
  static const TransferEvents registry(
      {"TransferRequested", "TransferCreditRejected", "TransferCompleted", "TransferCompensated", "TransferFailed"});
  return registry;
}

struct RequestTransfer {
  std::string transfer;
  std::string from;
  std::string to;
  long amount = 0;
  std::string stream() const { return "transfer-" + transfer; }
  std::optional<FieldError> validate() const {
    if (amount <= 0) return FieldError{"amount", "must be positive"};
    if (from == to) return FieldError{"to", "must differ from the source account"};
    return std::nullopt;
  }
};
struct RejectCredit {
  std::string transfer;
  std::string reason;
  std::string stream() const { return "transfer-" + transfer; }
};
struct CompleteTransfer {
  std::string transfer;
  std::string stream() const { return "transfer-" + transfer; }
};
struct CompensateTransfer {
  std::string transfer;
  std::string stream() const { return "transfer-" + transfer; }
};
struct FailTransfer {
  std::string transfer;
  std::string reason;
  std::string stream() const { return "transfer-" + transfer; }
};

struct Transfer {
  using Event = TransferEvents::Event;
  enum class Stage { none, requested, credit_rejected, completed, compensated, failed };
  struct State {
    Stage stage = Stage::none;
    TransferRequested request;
  };
  static State initial_state() { return {}; }
  static Decision<Event> decide(const RequestTransfer& c, const State& s) {
    if (s.stage != Stage::none) return Rejection{"transfer " + c.transfer + " exists"};
    return TransferRequested{c.transfer, c.from, c.to, c.amount};
  }
  // The process manager's commands: each moves the transfer on from where it must be, else does nothing.
  static Decision<Event> decide(const RejectCredit& c, const State& s) {
    if (s.stage != Stage::requested) return std::vector<Event>{};
    return CreditRejected{c.reason};
  }
  static Decision<Event> decide(const CompleteTransfer&, const State& s) {
    if (s.stage != Stage::requested) return std::vector<Event>{};
    return TransferCompleted{};
  }
  static Decision<Event> decide(const CompensateTransfer&, const State& s) {
    if (s.stage != Stage::credit_rejected) return std::vector<Event>{};
    return TransferCompensated{};
  }
  static Decision<Event> decide(const FailTransfer& c, const State& s) {
    if (s.stage != Stage::requested) return std::vector<Event>{};
    return TransferFailed{c.reason};
  }
  static State evolve(State s, const Event& e) {
    std::visit(overloaded{[&](const TransferRequested& r) {
                            s.stage = Stage::requested;
                            s.request = r;
                          },
                          [&](const CreditRejected&) { s.stage = Stage::credit_rejected; },
                          [&](const TransferCompleted&) { s.stage = Stage::completed; },
                          [&](const TransferCompensated&) { s.stage = Stage::compensated; },
                          [&](const TransferFailed&) { s.stage = Stage::failed; }},
               e);
    return s;
  }
};

// What the process manager reads: the transfer's events and the accounts' money movements (the same
// type names as the account registry's).
using TransferProcessEvents = EventRegistry<TransferRequested, CreditRejected, TransferCompleted, TransferCompensated,
                                            TransferFailed, Deposited, Withdrawn>;
inline const TransferProcessEvents& transfer_process_events() {
  static const TransferProcessEvents registry({"TransferRequested", "TransferCreditRejected", "TransferCompleted",
                                               "TransferCompensated", "TransferFailed", "MoneyDeposited",
                                               "MoneyWithdrawn"});
  return registry;
}

// One instance per transfer, keyed by the correlation id the RequestTransfer command began (every
// command it dispatches carries it on, so the accounts' events come back to it).
struct TransferProcess {
  using Event = TransferProcessEvents::Event;
  using Command = std::variant<Withdraw, Deposit, RejectCredit, CompleteTransfer, CompensateTransfer, FailTransfer>;
  enum class Stage { requested, debited, credited, refunding, refunded };
  struct State {
    Stage stage = Stage::requested;
    std::string transfer;
    std::string from;
    std::string to;
    long amount = 0;
    friend bool operator==(const State&, const State&) = default;
  };
  static State initial_state() { return {}; }
  static ProcessRoute route(const Event& e) {
    return std::visit(overloaded{[](const TransferRequested&) { return ProcessRoute::start(); },
                                 [](const TransferCompleted&) { return ProcessRoute::stop(); },
                                 [](const TransferCompensated&) { return ProcessRoute::stop(); },
                                 [](const TransferFailed&) { return ProcessRoute::stop(); },
                                 [](const auto&) { return ProcessRoute::proceed(); }},
                      e);
  }
  static std::vector<Command> handle(const State& s, const Event& e) {
    return std::visit(overloaded{[](const TransferRequested& r) -> std::vector<Command> {
                                   return {Withdraw{r.from, r.amount}};
                                 },
                                 [&](const Withdrawn&) -> std::vector<Command> {
                                   if (s.stage != Stage::requested) return {};
                                   return {Deposit{s.to, s.amount}};
                                 },
                                 [&](const Deposited&) -> std::vector<Command> {
                                   if (s.stage == Stage::debited) return {CompleteTransfer{s.transfer}};
                                   if (s.stage == Stage::refunding) return {CompensateTransfer{s.transfer}};
                                   return {};
                                 },
                                 [&](const CreditRejected&) -> std::vector<Command> {
                                   return {Deposit{s.from, s.amount}};  // the refund
                                 },
                                 [](const auto&) -> std::vector<Command> { return {}; }},
                      e);
  }
  static State apply(State s, const Event& e) {
    std::visit(overloaded{[&](const TransferRequested& r) {
                            s = State{Stage::requested, r.transfer, r.from, r.to, r.amount};
                          },
                          [&](const Withdrawn&) {
                            if (s.stage == Stage::requested) s.stage = Stage::debited;
                          },
                          [&](const Deposited&) {
                            if (s.stage == Stage::debited) s.stage = Stage::credited;
                            if (s.stage == Stage::refunding) s.stage = Stage::refunded;
                          },
                          [&](const CreditRejected&) { s.stage = Stage::refunding; }, [](const auto&) {}},
               e);
    return s;
  }
  static std::vector<Command> on_rejected(const State& s, const Command& c, const Rejection& r) {
    if (std::holds_alternative<Withdraw>(c)) return {FailTransfer{s.transfer, r.reason}};
    if (std::holds_alternative<Deposit>(c) && s.stage == Stage::debited) return {RejectCredit{s.transfer, r.reason}};
    return {};  // a refund the source account refuses (closed since): give up, the transfer stays open
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TransferProcess::State, stage, transfer, from, to, amount)

}  // namespace sourced::testing::bank
