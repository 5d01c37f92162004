#pragma once
// Transfers between accounts, run by a process manager (sourced/process_manager.hpp).
//
// A transfer is the stream `transfer-ID` (ID: the id of the command that requested it): the Transfer
// decider records what was asked and how it ended. The process manager "transfers" moves the money with
// the account commands of domain.hpp:
//
//   TransferRequested ─→ Withdraw FROM ─┬→ MoneyWithdrawn ─→ Deposit TO ─┬→ MoneyDeposited ─→ CompleteTransfer
//                                        │                               └→ rejected (TO closed, missing)
//                                        │                                   → RejectCredit → TransferCreditRejected
//                                        │                                   → Deposit FROM (the refund) →
//                                        CompensateTransfer └→ rejected (funds, FROM closed) → FailTransfer
//
// Its instances are keyed by the correlation id, which the RequestTransfer command starts and every
// command and event of the transfer carries on. TransferCompleted, TransferCompensated and TransferFailed
// stop the instance. Everything here but Transfers is pure (no I/O), like domain.hpp.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bank.hpp"
#include "domain.hpp"
#include "sourced/process_manager.hpp"

namespace bank {

inline constexpr std::string_view kTransferProcess = "transfers";

inline std::string transfer_stream(std::string_view id) { return "transfer-" + std::string(id); }

// ---- the transfer's events ----

struct TransferRequested {
  static constexpr std::string_view kEventType = "TransferRequested";
  std::string transfer;
  std::string from;
  std::string to;
  Amount amount = 0;
  bool operator==(const TransferRequested&) const = default;
};
struct TransferCreditRejected {
  static constexpr std::string_view kEventType = "TransferCreditRejected";
  std::string reason;
  bool operator==(const TransferCreditRejected&) const = default;
};
struct TransferCompleted {
  static constexpr std::string_view kEventType = "TransferCompleted";
  bool operator==(const TransferCompleted&) const = default;
};
struct TransferCompensated {
  static constexpr std::string_view kEventType = "TransferCompensated";
  bool operator==(const TransferCompensated&) const = default;
};
struct TransferFailed {
  static constexpr std::string_view kEventType = "TransferFailed";
  std::string reason;
  bool operator==(const TransferFailed&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TransferRequested, transfer, from, to, amount)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TransferCreditRejected, reason)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TransferFailed, reason)
inline void to_json(nlohmann::json& j, const TransferCompleted&) { j = nlohmann::json::object(); }
inline void from_json(const nlohmann::json&, TransferCompleted&) {}
inline void to_json(nlohmann::json& j, const TransferCompensated&) { j = nlohmann::json::object(); }
inline void from_json(const nlohmann::json&, TransferCompensated&) {}

using TransferEvents = sourced::EventRegistry<TransferRequested, TransferCreditRejected, TransferCompleted,
                                              TransferCompensated, TransferFailed>;
inline const TransferEvents& transfer_events() {
  static const TransferEvents registry;
  return registry;
}

// ---- the transfer's commands ----

struct RequestTransfer {
  static constexpr std::string_view kCommandType = "RequestTransfer";
  std::string transfer;
  std::string from;
  std::string to;
  Amount amount = 0;
  std::string stream() const { return transfer_stream(transfer); }
  std::optional<sourced::FieldError> validate() const {
    if (auto problem = account_id_problem(from)) return sourced::FieldError{"from", *problem};
    if (auto problem = account_id_problem(to)) return sourced::FieldError{"to", *problem};
    if (from == to) return sourced::FieldError{"to", fmt::format("is the source account {} too", from)};
    return detail::check_amount(amount);
  }
};
// What the process manager tells the transfer; each only moves it on from the stage it expects.
struct RejectCredit {
  static constexpr std::string_view kCommandType = "RejectCredit";
  std::string transfer;
  std::string reason;
  std::string stream() const { return transfer_stream(transfer); }
};
struct CompleteTransfer {
  static constexpr std::string_view kCommandType = "CompleteTransfer";
  std::string transfer;
  std::string stream() const { return transfer_stream(transfer); }
};
struct CompensateTransfer {
  static constexpr std::string_view kCommandType = "CompensateTransfer";
  std::string transfer;
  std::string stream() const { return transfer_stream(transfer); }
};
struct FailTransfer {
  static constexpr std::string_view kCommandType = "FailTransfer";
  std::string transfer;
  std::string reason;
  std::string stream() const { return transfer_stream(transfer); }
};

// ---- the Transfer decider ----

struct Transfer {
  using Event = TransferEvents::Event;
  enum class Stage { none, requested, credit_rejected, completed, compensated, failed };
  struct State {
    Stage stage = Stage::none;
    TransferRequested request;
    std::string reason;  // why the credit or the debit was rejected
  };
  static State initial_state() { return {}; }
  static sourced::Decision<Event> decide(const RequestTransfer& c, const State& s) {
    if (s.stage != Stage::none) return sourced::Rejection{fmt::format("transfer {} exists", c.transfer)};
    return TransferRequested{c.transfer, c.from, c.to, c.amount};
  }
  static sourced::Decision<Event> decide(const RejectCredit& c, const State& s) {
    if (s.stage != Stage::requested) return std::vector<Event>{};
    return TransferCreditRejected{c.reason};
  }
  static sourced::Decision<Event> decide(const CompleteTransfer&, const State& s) {
    if (s.stage != Stage::requested) return std::vector<Event>{};
    return TransferCompleted{};
  }
  static sourced::Decision<Event> decide(const CompensateTransfer&, const State& s) {
    if (s.stage != Stage::credit_rejected) return std::vector<Event>{};
    return TransferCompensated{};
  }
  static sourced::Decision<Event> decide(const FailTransfer& c, const State& s) {
    if (s.stage != Stage::requested) return std::vector<Event>{};
    return TransferFailed{c.reason};
  }
  static State evolve(State s, const Event& e) {
    std::visit(sourced::overloaded{[&](const TransferRequested& r) {
                                     s.stage = Stage::requested;
                                     s.request = r;
                                   },
                                   [&](const TransferCreditRejected& r) {
                                     s.stage = Stage::credit_rejected;
                                     s.reason = r.reason;
                                   },
                                   [&](const TransferCompleted&) { s.stage = Stage::completed; },
                                   [&](const TransferCompensated&) { s.stage = Stage::compensated; },
                                   [&](const TransferFailed& f) {
                                     s.stage = Stage::failed;
                                     s.reason = f.reason;
                                   }},
               e);
    return s;
  }
  static bool ended(const State& s) {
    return s.stage == Stage::completed || s.stage == Stage::compensated || s.stage == Stage::failed;
  }
};

// ---- the process manager ----

// What it reads: the transfers' events and the accounts' money movements.
using TransferProcessEvents =
    sourced::EventRegistry<TransferRequested, TransferCreditRejected, TransferCompleted, TransferCompensated,
                           TransferFailed, MoneyDeposited, MoneyWithdrawn>;
inline const TransferProcessEvents& transfer_process_events() {
  static const TransferProcessEvents registry;
  return registry;
}

struct TransferProcess {
  using Event = TransferProcessEvents::Event;
  using Command = std::variant<Withdraw, Deposit, RejectCredit, CompleteTransfer, CompensateTransfer, FailTransfer>;
  enum class Stage { requested, debited, credited, refunding, refunded };
  struct State {
    Stage stage = Stage::requested;
    TransferRequested request;
  };
  static State initial_state() { return {}; }

  static sourced::ProcessRoute route(const Event& e) {
    using sourced::ProcessRoute;
    return std::visit(sourced::overloaded{[](const TransferRequested&) { return ProcessRoute::start(); },
                                          [](const TransferCompleted&) { return ProcessRoute::stop(); },
                                          [](const TransferCompensated&) { return ProcessRoute::stop(); },
                                          [](const TransferFailed&) { return ProcessRoute::stop(); },
                                          // The money movements of a running transfer; others are ignored.
                                          [](const auto&) { return ProcessRoute::proceed(); }},
                      e);
  }
  static std::vector<Command> handle(const State& s, const Event& e) {
    const auto& r = s.request;
    return std::visit(sourced::overloaded{[](const TransferRequested& req) -> std::vector<Command> {
                                            return {Withdraw{req.from, req.amount}};
                                          },
                                          [&](const MoneyWithdrawn&) -> std::vector<Command> {
                                            if (s.stage != Stage::requested) return {};
                                            return {Deposit{r.to, r.amount}};
                                          },
                                          [&](const MoneyDeposited&) -> std::vector<Command> {
                                            if (s.stage == Stage::debited) return {CompleteTransfer{r.transfer}};
                                            if (s.stage == Stage::refunding) return {CompensateTransfer{r.transfer}};
                                            return {};
                                          },
                                          [&](const TransferCreditRejected&) -> std::vector<Command> {
                                            return {Deposit{r.from, r.amount}};  // the refund
                                          },
                                          [](const auto&) -> std::vector<Command> { return {}; }},
                      e);
  }
  static State apply(State s, const Event& e) {
    std::visit(
        sourced::overloaded{[&](const TransferRequested& req) {
                              s = State{Stage::requested, req};
                            },
                            [&](const MoneyWithdrawn&) {
                              if (s.stage == Stage::requested) s.stage = Stage::debited;
                            },
                            [&](const MoneyDeposited&) {
                              if (s.stage == Stage::debited) {
                                s.stage = Stage::credited;
                              } else if (s.stage == Stage::refunding) {
                                s.stage = Stage::refunded;
                              }
                            },
                            [&](const TransferCreditRejected&) { s.stage = Stage::refunding; }, [](const auto&) {}},
        e);
    return s;
  }
  // The debit refused: the transfer fails. The credit refused: the transfer records it, and its event
  // brings the refund. A refused refund (the source closed meanwhile): give up; the transfer stays open
  // for someone to look at.
  static std::vector<Command> on_rejected(const State& s, const Command& c, const sourced::Rejection& r) {
    if (std::holds_alternative<Withdraw>(c)) return {FailTransfer{s.request.transfer, r.reason}};
    if (std::holds_alternative<Deposit>(c) && s.stage == Stage::debited) {
      return {RejectCredit{s.request.transfer, r.reason}};
    }
    return {};
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TransferProcess::State, stage, request)

// ---- wiring ----

using TransferRepository = sourced::Repository<Transfer, TransferEvents>;
using TransferManager = sourced::ProcessManager<TransferProcess, TransferProcessEvents>;

// The transfers of a Bank: registers the transfer commands on its bus (construct it before the bus's first
// dispatch) and the process manager's subscription. Used by one thread, like the Bank.
class Transfers {
 public:
  explicit Transfers(Bank& bank);

  struct Outcome {
    std::string transfer;  // the transfer's id (the command id)
    Transfer::State state;
    bool repeated = false;                 // the command id had requested this transfer before
    std::optional<std::string> rejection;  // the request itself was refused (nothing ran)
  };
  // Requests a transfer (idempotent with a command id) and runs the process manager in this thread until
  // it has ended (completed, compensated or failed). Throws sourced::InvalidCommand for bad input and
  // StorageError when it has not ended within `timeout` (another bank process holding the process
  // manager's lease for longer).
  Outcome transfer(const std::string& from, const std::string& to, Amount amount,
                   std::optional<sourced::Uuid> command_id = std::nullopt,
                   std::chrono::milliseconds timeout = std::chrono::seconds(30));

  const TransferRepository& repository() const { return repository_; }
  TransferManager& manager() { return manager_; }

 private:
  Bank& bank_;
  TransferRepository repository_;
  TransferManager manager_;
};

// The position of the last account event (0: none). What to wait for the mailer to reach: its filtered
// subscription moves only over account events, so after a transfer (whose last events are the transfer's
// and the process manager's) it never reaches the head of `$all`.
sourced::Position last_account_event(sourced::EventStore& store);

// `bank transfer FROM TO AMOUNT [--command-id UUID]`.
void add_transfer_commands(CommandLine& cli);
// One line about how a transfer ended: "completed: ...", "compensated: ...", "failed: ...".
std::string describe(const Transfer::State& transfer);

}  // namespace bank
