#pragma once
// The bank application around the domain: the store, the repository and command bus that run the Account
// decider, the balances projection and the mailer, and the command line's shared parts. Each command of
// the command line lives in its own file and is mounted in main.cpp with one call (see CommandLine).
//
// A Bank is used by one thread (the command's); the projection and mailer runners it starts have their
// own threads and are stopped when it is destroyed.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "balances.hpp"
#include "domain.hpp"
#include "notifications.hpp"
#include "sourced/command_bus.hpp"
#include "sourced/event_handler.hpp"
#include "sourced/projection.hpp"
#include "sourced/repository.hpp"
#include "sourced/store.hpp"

namespace bank {

// Exit codes of every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;   // the store or the system failed
inline constexpr int kExitBadInput = 2;  // bad arguments: a number, a uuid, an account id
inline constexpr int kExitRejected = 3;  // the domain refused the command (message on stderr)

// The options every command takes.
struct BankOptions {
  std::string store = "bank.db";  // a SQLite file, "sqlite:PATH", or a postgres:// URL
  std::string mail;               // the mail file; empty: mail_path_for(store)
  bool fresh = false;             // the scenario: wipe the store even when it holds events of others
  // How long a command waits for the balances model to reach what it wrote (read your writes).
  std::chrono::milliseconds wait{30000};
};

// Where the mailer writes by default: beside a SQLite store (bank.db → bank-mail.txt), else in the
// current directory.
std::string mail_path_for(const std::string& store);

using AccountRepository = sourced::Repository<Account, AccountEvents>;

class Bank {
 public:
  // Opens (creating when missing) the store and the balances model beside it.
  explicit Bank(BankOptions options);
  ~Bank();

  sourced::EventStore& store() { return *store_; }
  const AccountRepository& accounts() const { return *accounts_; }
  // Every account command is routed here (OpenAccount, Deposit, Withdraw, CloseAccount).
  const sourced::CommandBus& bus() const { return bus_; }
  sourced::CommandBus& bus() { return bus_; }
  Balances& balances() { return *balances_; }
  const std::string& mail_path() const { return mail_path_; }
  const BankOptions& options() const { return options_; }

  // Starts the balances projection (resume, then follow) unless it runs already.
  sourced::PartitionedProjectionRunner& run_balances();
  // Starts the mailer unless it runs already; `sent` hears of each mail sent. Waits for the mailer's
  // lease only when `wait`; nullptr when another process runs the mailer now (it will send the mail).
  sourced::EventHandlerRunner* run_mailer(bool wait = true,
                                          std::function<void(const std::string&, const std::string&)> sent = {});
  // Blocks until the balances model has processed `position`; throws when it fails or takes over `timeout`.
  void wait_for_balances(sourced::Position position, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Stops the runners (each commits or saves what it has done).
  void stop();

 private:
  BankOptions options_;
  std::string mail_path_;
  std::unique_ptr<sourced::EventStore> store_;
  std::unique_ptr<AccountRepository> accounts_;
  sourced::CommandBus bus_;
  std::unique_ptr<Balances> balances_;
  std::unique_ptr<sourced::PartitionedProjectionRunner> balances_runner_;
  std::unique_ptr<sourced::EventHandlerRunner> mailer_;
};

// Thrown for bad input found after parsing (exit code 2).
struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --store and --mail, on the application and on each subcommand.
inline void add_store_options(CLI::App& app, BankOptions& options) {
  app.add_option("--store", options.store, "a SQLite file or a postgres:// URL (default ./bank.db)");
  app.add_option("--mail", options.mail, "the file the mailer writes to (default: beside the SQLite store)");
  app.add_option_function<std::int64_t>(
      "--wait-ms",
      [&options](std::int64_t ms) {
        if (ms < 0) throw CLI::ValidationError("--wait-ms", std::to_string(ms) + " is negative: give 0 or more");
        options.wait = std::chrono::milliseconds(ms);
      },
      "how long a command waits for the balances to show what it wrote (default 30000); past it the command "
      "still succeeds and says so on stderr");
}

// The command line: subcommands register here; main() parses and runs the one chosen (or the scenario).
struct CommandLine {
  CLI::App& app;
  BankOptions& options;
  // What to run once parsed: set by the chosen subcommand's callback.
  std::function<int()> action;

  // Adds a subcommand whose `run` is what runs when it is chosen.
  CLI::App* add(const std::string& name, const std::string& description, std::function<int()> run) {
    CLI::App* sub = app.add_subcommand(name, description);
    sub->callback([this, run = std::move(run)] { action = run; });
    add_store_options(*sub, options);  // before or after the subcommand's name alike
    return sub;
  }
};

// --command-id UUID on `sub`, parsed into `id` (bad input exits 2).
void add_command_id_option(CLI::App* sub, std::optional<sourced::Uuid>& id);

// Dispatches `command` on a fresh Bank, catches the balances model up with what it wrote, has the mailer
// send its mail, and prints what happened; returns the exit code. `done` describes the success.
template <class C>
int run_account_command(const BankOptions& options, const C& command, const std::optional<sourced::Uuid>& command_id,
                        const std::function<std::string(const sourced::CommandResult&)>& done);

// Prints `row` as the commands and the scenario do.
std::string describe(const BalanceRow& row);

// The commands, each in its own file.
void add_account_commands(CommandLine& cli);  // open, deposit, withdraw, close, balance
int run_scenario(const BankOptions& options);
void add_projection_commands(CommandLine& cli);  // projections, projection rebuild|retry|skip (the library's)

// ---- templates ----

int report_failure(const std::exception& e);
// Waits (options().wait) for the balances to reach `position`, which a command has written. The command
// has succeeded whatever happens here: when the model does not get there (a timeout, a stopped partition,
// a store error) this says so on stderr and returns; the model catches up later.
void catch_up_balances(Bank& bank, sourced::Position position);
void after_command(Bank& bank, const sourced::CommandResult& result);

template <class C>
int run_account_command(const BankOptions& options, const C& command, const std::optional<sourced::Uuid>& command_id,
                        const std::function<std::string(const sourced::CommandResult&)>& done) {
  try {
    Bank bank(options);
    sourced::CommandResult r = bank.bus().dispatch(command, {.command_id = command_id});
    if (r.rejected()) {
      fmt::print(stderr, "bank: {}\n", r.rejection->reason);
      return kExitRejected;
    }
    after_command(bank, r);
    fmt::print("{}{}\n", done(r),
               r.repeated ? " (a repeat of command " + r.command_id.to_string() + ": nothing written)" : "");
    return kExitOk;
  } catch (const std::exception& e) {
    return report_failure(e);
  }
}

}  // namespace bank
