// bank projections / bank projection rebuild|retry|skip: the library's projection commands
// (sourced/projection_cli.hpp) mounted with the bank's one projection, balances, on the store --store names
// (its read model lives beside the events: the same SQLite file or PostgreSQL schema).
//
//   bank projections                               one JSON line per partition: checkpoint, head, lag, status, errors
//   bank projection rebuild balances               clear bank_balances and replay the log (a progress bar on a
//   terminal) bank projection retry balances PARTITION       a stopped partition goes back to work bank projection skip
//   balances PARTITION        a stopped partition moves past the event it failed on
//
// Exit codes as the other commands: 0 done, 1 a store or system failure, 2 bad input (an unknown projection,
// a partition that does not exist or has not failed).

#include "bank.hpp"
#include "sourced/open_store.hpp"
#include "sourced/projection_cli.hpp"

namespace bank {

void add_projection_commands(CommandLine& cli) {
  sourced::ProjectionCli commands;
  commands.with_stores = [&options = cli.options](const auto& run) {
    auto events = sourced::open_store(options.store);
    auto balances = open_balances(options.store);
    return run(*events, balances->models());
  };
  commands.projections.push_back(balances_command_entry());
  for (CLI::App* sub : sourced::add_projection_commands(cli.app, std::move(commands), cli.action)) {
    add_store_options(*sub, cli.options);
  }
}

}  // namespace bank
