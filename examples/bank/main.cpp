// The bank example: accounts as event-sourced aggregates run by the library's CQRS parts (an Account
// decider behind a repository and a command bus), the balances as a projection into a table beside the
// events, and a notification handler that "e-mails" account holders by writing to a file.
//
//   bank [--store PATH|URL] [--mail FILE] [--fresh]   the scripted scenario, on a store wiped for it: only
//                                             an empty store or an earlier scenario's (else --fresh)
//   bank open ID OWNER [--command-id UUID]    one command at a time, for scripts (the store is kept)
//   bank deposit ID AMOUNT [--command-id UUID]
//   bank withdraw ID AMOUNT [--command-id UUID]
//   bank close ID [--command-id UUID]
//   bank transfer FROM TO AMOUNT [--command-id UUID]   (transfer.cpp: runs the transfer to its end)
//   bank balance ID
//   bank projections                          the projections' checkpoints, lag, status and errors
//   bank projection rebuild balances          (and retry / skip): the library's projection commands
//
// --store defaults to ./bank.db (a SQLite file); a postgres:// URL works the same. Exit codes: 0 done,
// 1 a store or system failure, 2 bad input, 3 refused by the domain (the reason on stderr).
//
// Each group of commands lives in a file of its own and is mounted below with one call.

#include "bank.hpp"
#include "transfer.hpp"

int main(int argc, char** argv) {
  CLI::App app{"The sourced bank example: run the scenario, or one command at a time."};
  bank::BankOptions options;
  bank::add_store_options(app, options);
  app.add_flag("--fresh", options.fresh,
               "the scenario: wipe the store even when it holds events the scenario did not write");
  bank::CommandLine cli{app, options, {}};
  bank::add_account_commands(cli);
  bank::add_transfer_commands(cli);
  bank::add_projection_commands(cli);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return bank::kExitBadInput;
  }
  return cli.action ? cli.action() : bank::run_scenario(options);
}
