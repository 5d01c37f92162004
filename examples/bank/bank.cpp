#include "bank.hpp"

#include <filesystem>

#include "sourced/command.hpp"
#include "sourced/open_store.hpp"

namespace bank {

std::string mail_path_for(const std::string& store) {
  if (is_postgres_location(store) || store == "memory:") return "bank-mail.txt";
  std::filesystem::path p(sqlite_path(store));
  return (p.parent_path() / (p.stem().string() + "-mail.txt")).string();
}

Bank::Bank(BankOptions options)
    : options_(std::move(options)), mail_path_(options_.mail.empty() ? mail_path_for(options_.store) : options_.mail) {
  store_ = sourced::open_store(options_.store);
  // A teller who loses a race reloads and decides again; generously, since many tellers (processes) may
  // work on one account at once and each retry is one short read.
  accounts_ = std::make_unique<AccountRepository>(*store_, account_events(), Account{},
                                                  sourced::RepositoryOptions{.max_conflict_retries = 50});
  bus_.register_handler<OpenAccount>(*accounts_);
  bus_.register_handler<Deposit>(*accounts_);
  bus_.register_handler<Withdraw>(*accounts_);
  bus_.register_handler<CloseAccount>(*accounts_);
  balances_ = open_balances(options_.store);
}

Bank::~Bank() { stop(); }

sourced::PartitionedProjectionRunner& Bank::run_balances() {
  if (!balances_runner_) {
    // Short intervals: a command waits for its own events, and the partitions another bank process works
    // are seen through their state rows, read every takeover_interval.
    balances_runner_ = balances_->start(*store_, {.batch_interval = std::chrono::milliseconds(20),
                                                  .takeover_interval = std::chrono::milliseconds(50),
                                                  .progress = sourced::ProgressDisplay::none});
  }
  return *balances_runner_;
}

sourced::EventHandlerRunner* Bank::run_mailer(bool wait,
                                              std::function<void(const std::string&, const std::string&)> sent) {
  if (!mailer_) {
    try {
      mailer_ = std::make_unique<sourced::EventHandlerRunner>(
          *store_, mailer(std::make_shared<Mailbox>(mail_path_), *store_, std::move(sent)),
          sourced::EventHandlerOptions{.wait_for_lease = wait, .checkpoint_after_acks = 20});
    } catch (const sourced::SubscriptionLocked&) {
      if (wait) throw;
      return nullptr;
    }
  }
  return mailer_.get();
}

void Bank::wait_for_balances(sourced::Position position, std::chrono::milliseconds timeout) {
  auto& runner = run_balances();
  switch (runner.wait_for(position, timeout)) {
    case sourced::WaitResult::reached:
      return;
    case sourced::WaitResult::timeout:
      throw sourced::StorageError(fmt::format("the balances projection did not reach position {} within {} ms",
                                              position.value(), timeout.count()));
    case sourced::WaitResult::stopped:
      break;
  }
  if (auto e = runner.error()) std::rethrow_exception(e);
  for (const auto& p : runner.progress().partitions) {
    if (p.status == sourced::ProjectionStatus::failed) {
      throw sourced::StorageError(fmt::format(
          "the balances projection's partition {} stopped at position {} before position {}: {} (see `bank "
          "projections`; `bank projection retry {} {}` tries again, `bank projection skip {} {}` skips the event)",
          p.partition, p.position.value(), position.value(), p.last_error, kBalancesProjection, p.partition,
          kBalancesProjection, p.partition));
    }
  }
  throw sourced::StorageError(fmt::format("the balances projection stopped before position {}", position.value()));
}

void Bank::stop() {
  if (mailer_) mailer_->stop();
  if (balances_runner_) balances_runner_->stop();
}

void add_command_id_option(CLI::App* sub, std::optional<sourced::Uuid>& id) {
  sub->add_option_function<std::string>(
      "--command-id",
      [&id](const std::string& text) {
        id = sourced::Uuid::parse(text);
        if (!id) throw CLI::ValidationError("--command-id", "'" + text + "' is not a UUID (8-4-4-4-12 hex digits)");
      },
      "the command's id: a repeat with the same id writes nothing (idempotent)");
}

std::string describe(const BalanceRow& row) {
  return fmt::format("account-{}: owner {}, balance {}, {}, version {}", row.account, row.owner, row.balance,
                     row.status, row.version);
}

int report_failure(const std::exception& e) {
  fmt::print(stderr, "bank: {}\n", e.what());
  if (dynamic_cast<const sourced::InvalidCommand*>(&e) || dynamic_cast<const BadInput*>(&e)) return kExitBadInput;
  return kExitFailure;
}

void catch_up_balances(Bank& bank, sourced::Position position) {
  try {
    bank.wait_for_balances(position, bank.options().wait);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bank: the command is written (position {}), but the balances are not yet up to date: {}\n",
               position.value(), e.what());
  }
}

void after_command(Bank& bank, const sourced::CommandResult& result) {
  // Read your writes: the model has the command's events before the command returns. A repeat points at
  // what the first run wrote, which the model has seen or is about to.
  catch_up_balances(bank, result.position);
  // The mail goes out now too, unless another bank process is sending it (then it sends this one as well).
  if (auto* m = bank.run_mailer(false)) m->wait_for(result.position, std::chrono::seconds(10));
}

}  // namespace bank
