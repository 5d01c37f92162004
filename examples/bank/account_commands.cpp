// bank open|deposit|withdraw|close|balance: one command at a time, for scripts. Each opens the store as it
// is (nothing is wiped), exits 0 on success, 3 when the domain refuses (the reason on stderr), 2 on bad
// input.

#include <charconv>

#include "bank.hpp"

namespace bank {
namespace {

// Positional arguments, checked after parsing so that the message names the argument and the exit code is 2.
void check_account(const std::string& id) {
  if (auto problem = account_id_problem(id)) throw BadInput(*problem);
}

Amount parse_amount(const std::string& text) {
  Amount v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) {
    throw BadInput(fmt::format("AMOUNT '{}' is not a whole number of units", text));
  }
  if (v <= 0 || v > kMaxAmount) throw BadInput(fmt::format("AMOUNT {} is out of range: 1 to {}", v, kMaxAmount));
  return v;
}

// What the account commands share: the account id, the amount (as text), the command id.
struct Args {
  std::string account;
  std::string amount;
  std::string owner;
  std::optional<sourced::Uuid> command_id;
};

template <class MakeCommand, class Done>
std::function<int()> account_action(CommandLine& cli, std::shared_ptr<Args> args, MakeCommand make, Done done) {
  return [&options = cli.options, args, make, done]() -> int {
    try {
      check_account(args->account);
      auto command = make(*args);
      return run_account_command(options, command, args->command_id,
                                 [&](const sourced::CommandResult& r) { return done(command, r); });
    } catch (const BadInput& e) {
      return report_failure(e);
    }
  };
}

std::string where(const sourced::CommandResult& r) {
  return fmt::format("version {}, position {}", r.stream_version.value(), r.position.value());
}

}  // namespace

void add_account_commands(CommandLine& cli) {
  {
    auto args = std::make_shared<Args>();
    auto* sub = cli.add("open", "open account ID for OWNER",
                        account_action(
                            cli, args,
                            [](const Args& a) {
                              return OpenAccount{a.account, a.owner};
                            },
                            [](const OpenAccount& c, const sourced::CommandResult& r) {
                              return fmt::format("opened account {} for {} ({})", c.account, c.owner, where(r));
                            }));
    sub->add_option("ID", args->account, "account id: 1-40 of a-z, 0-9, _")->required();
    sub->add_option("OWNER", args->owner, "the holder's name")->required();
    add_command_id_option(sub, args->command_id);
  }
  for (bool deposit : {true, false}) {
    auto args = std::make_shared<Args>();
    auto done = [deposit](const auto& c, const sourced::CommandResult& r) {
      return fmt::format("{} {} {} account {} ({})", deposit ? "deposited" : "withdrew", c.amount,
                         deposit ? "into" : "from", c.account, where(r));
    };
    std::function<int()> action = deposit ? account_action(
                                                cli, args,
                                                [](const Args& a) {
                                                  return Deposit{a.account, parse_amount(a.amount)};
                                                },
                                                done)
                                          : account_action(
                                                cli, args,
                                                [](const Args& a) {
                                                  return Withdraw{a.account, parse_amount(a.amount)};
                                                },
                                                done);
    auto* sub = cli.add(deposit ? "deposit" : "withdraw",
                        deposit ? "deposit AMOUNT into account ID" : "withdraw AMOUNT from account ID", action);
    sub->add_option("ID", args->account, "account id")->required();
    sub->add_option("AMOUNT", args->amount, "a positive whole number of units")->required();
    add_command_id_option(sub, args->command_id);
  }
  {
    auto args = std::make_shared<Args>();
    auto* sub = cli.add("close", "close account ID (its balance must be 0)",
                        account_action(
                            cli, args, [](const Args& a) { return CloseAccount{a.account}; },
                            [](const CloseAccount& c, const sourced::CommandResult& r) {
                              return fmt::format("closed account {} ({})", c.account, where(r));
                            }));
    sub->add_option("ID", args->account, "account id")->required();
    add_command_id_option(sub, args->command_id);
  }
  {
    auto args = std::make_shared<Args>();
    auto* sub = cli.add("balance", "print account ID's balance, read from the balances projection",
                        [&options = cli.options, args]() -> int {
                          try {
                            check_account(args->account);
                            Bank bank(options);
                            // Caught up with everything written so far (every command's position).
                            bank.wait_for_balances(bank.store().head_position());
                            auto row = bank.balances().find(args->account);
                            if (!row) {
                              fmt::print(stderr, "bank: account {} does not exist\n", args->account);
                              return kExitRejected;
                            }
                            fmt::print("{}\n", describe(*row));
                            return kExitOk;
                          } catch (const std::exception& e) {
                            return report_failure(e);
                          }
                        });
    sub->add_option("ID", args->account, "account id")->required();
  }
}

}  // namespace bank
