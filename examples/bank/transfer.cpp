// Transfers: the wiring of transfer.hpp and `bank transfer FROM TO AMOUNT [--command-id UUID]`, which
// requests a transfer and runs the process manager until the transfer has ended. Exit codes: 0 completed
// or compensated (the credit was refused and the money refunded), 3 when the debit itself was refused
// (the transfer failed), 2 on bad input, 1 when the store fails or the transfer does not end in time.

#include "transfer.hpp"

#include <charconv>

namespace bank {

Transfers::Transfers(Bank& bank)
    : bank_(bank),
      repository_(bank.store(), transfer_events()),
      manager_(bank.store(), transfer_process_events(), bank.bus(), std::string(kTransferProcess)) {
  auto& bus = bank.bus();
  bus.register_handler<RequestTransfer>(repository_);
  bus.register_handler<RejectCredit>(repository_);
  bus.register_handler<CompleteTransfer>(repository_);
  bus.register_handler<CompensateTransfer>(repository_);
  bus.register_handler<FailTransfer>(repository_);
  // From the first event, as Commanded's :origin: a transfer requested while no process ran is still
  // seen through.
  manager_.create_subscription();
}

Transfers::Outcome Transfers::transfer(const std::string& from, const std::string& to, Amount amount,
                                       std::optional<sourced::Uuid> command_id, std::chrono::milliseconds timeout) {
  const sourced::Uuid id = command_id.value_or(sourced::Uuid::v7());
  Outcome out;
  out.transfer = id.to_string();
  const std::string stream = transfer_stream(out.transfer);
  sourced::CommandResult r = bank_.bus().dispatch(RequestTransfer{out.transfer, from, to, amount}, {.command_id = id});
  if (r.rejected()) {
    out.rejection = r.rejection->reason;
    return out;
  }
  out.repeated = r.repeated;
  auto ended = [&] { return Transfer::ended(repository_.load(stream).state); };
  if (!manager_.run_until(ended, timeout)) {
    throw sourced::StorageError(
        fmt::format("transfer {} has not ended within {} ms (is another bank process holding the process manager {}?)",
                    out.transfer, timeout.count(), kTransferProcess));
  }
  out.state = repository_.load(stream).state;
  return out;
}

sourced::Position last_account_event(sourced::EventStore& store) {
  sourced::ReadAllOptions last;
  last.direction = sourced::Direction::backward;
  last.max_count = 1;
  last.filter = sourced::EventFilter{.category = "account", .stream_prefix = std::nullopt, .event_types = {}};
  sourced::EventReader reader = store.read_all(last);
  const sourced::RecordedEvent* e = reader.next();
  return e ? e->position : sourced::Position(0);
}

std::string describe(const Transfer::State& t) {
  const auto& r = t.request;
  switch (t.stage) {
    case Transfer::Stage::completed:
      return fmt::format("completed: {} moved from {} to {}", r.amount, r.from, r.to);
    case Transfer::Stage::compensated:
      return fmt::format("compensated: the credit to {} was refused ({}), {} refunded to {}", r.to, t.reason, r.amount,
                         r.from);
    case Transfer::Stage::failed:
      return fmt::format("failed: the debit of {} from {} was refused ({})", r.amount, r.from, t.reason);
    default:
      return "not ended";
  }
}

namespace {
struct TransferArgs {
  std::string from;
  std::string to;
  std::string amount;
  std::optional<sourced::Uuid> command_id;
};

Amount parse_transfer_amount(const std::string& text) {
  Amount v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) {
    throw BadInput(fmt::format("AMOUNT '{}' is not a whole number of units", text));
  }
  if (v <= 0 || v > kMaxAmount) throw BadInput(fmt::format("AMOUNT {} is out of range: 1 to {}", v, kMaxAmount));
  return v;
}

int run_transfer(const BankOptions& options, const TransferArgs& args) {
  try {
    for (const auto* id : {&args.from, &args.to}) {
      if (auto problem = account_id_problem(*id)) throw BadInput(*problem);
    }
    Amount amount = parse_transfer_amount(args.amount);
    Bank bank(options);
    Transfers transfers(bank);
    Transfers::Outcome t = transfers.transfer(args.from, args.to, amount, args.command_id);
    if (t.rejection) {
      fmt::print(stderr, "bank: transfer {} refused: {}\n", t.transfer, *t.rejection);
      return kExitRejected;
    }
    // The balances and the mail catch up with everything the transfer wrote, as after any command.
    struct {
      sourced::Position position;
    } written;
    written.position = bank.store().head_position();
    catch_up_balances(bank, written.position);
    if (auto* m = bank.run_mailer(false)) m->wait_for(last_account_event(bank.store()), std::chrono::seconds(10));
    std::string repeat = t.repeated ? " (a repeat of command " + t.transfer + ": nothing written)" : "";
    if (t.state.stage == Transfer::Stage::failed) {
      fmt::print(stderr, "bank: transfer {} {}{}\n", t.transfer, describe(t.state), repeat);
      return kExitRejected;
    }
    fmt::print("transfer {} {}{}\n", t.transfer, describe(t.state), repeat);
    return kExitOk;
  } catch (const std::exception& e) {
    return report_failure(e);
  }
}
}  // namespace

void add_transfer_commands(CommandLine& cli) {
  auto args = std::make_shared<TransferArgs>();
  auto* sub = cli.add("transfer",
                      "move AMOUNT from account FROM to account TO through the transfer process manager, and "
                      "wait until it has completed, been compensated (refunded) or failed",
                      [&options = cli.options, args] { return run_transfer(options, *args); });
  sub->add_option("FROM", args->from, "the account debited")->required();
  sub->add_option("TO", args->to, "the account credited")->required();
  sub->add_option("AMOUNT", args->amount, "a positive whole number of units")->required();
  add_command_id_option(sub, args->command_id);
}

}  // namespace bank
