// `bank [--store PATH|URL] [--fresh]`: the scripted scenario, on a store created fresh for it (a SQLite file
// is deleted first; a PostgreSQL schema is dropped first), printing what happens.
//
// It wipes only what it may: an empty store, or one whose last event is the end marker an earlier run of
// the scenario wrote (so `bank` twice in a row just works). Anything else (accounts the one-at-a-time
// commands opened on the default ./bank.db, another application's schema) makes it refuse with exit code
// 2, unless --fresh says to wipe anyway. A scenario that died before its end marker counts as foreign too:
// what came after it cannot be told apart.

#include <filesystem>
#include <mutex>
#include <optional>

#include "bank.hpp"
#include "sourced/open_store.hpp"
#include "transfer.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_projection_store.hpp"
#endif

namespace bank {
namespace {

// The scenario's own stream (category "bank", which no projection, handler or process manager reads):
// started when it begins, finished when it ends.
constexpr std::string_view kScenarioStream = "bank-scenario";
constexpr std::string_view kScenarioStarted = "ScenarioStarted";
constexpr std::string_view kScenarioFinished = "ScenarioFinished";

void mark(sourced::EventStore& store, std::string_view type) {
  sourced::EventData e;
  e.type = std::string(type);
  e.data = "{}";
  e.content_type = sourced::ContentType::json;
  store.append(kScenarioStream, sourced::ExpectedVersion::any(), {e});
}

// Why the store must not be wiped without --fresh; nullopt when it is missing, empty, or ends with an
// earlier scenario's end marker.
std::optional<std::string> foreign_events(const BankOptions& options) {
  if (!is_postgres_location(options.store) && !std::filesystem::exists(sqlite_path(options.store))) {
    return std::nullopt;
  }
  auto store = sourced::open_store(options.store);
  sourced::ReadAllOptions last;
  last.direction = sourced::Direction::backward;
  last.max_count = 1;
  sourced::EventReader reader = store->read_all(last);
  const sourced::RecordedEvent* e = reader.next();
  if (!e || (e->stream == kScenarioStream && e->type == kScenarioFinished)) return std::nullopt;
  return fmt::format(
      "{} already holds events the scenario did not write (its last: position {}, stream '{}', type '{}'); the "
      "scenario starts from an empty store and would delete them. Pass --fresh to delete them anyway, or give "
      "another --store",
      options.store, e->position.value(), e->stream, e->type);
}

void wipe(const BankOptions& options, const std::string& mail_path) {
  std::filesystem::remove(mail_path);
  if (is_postgres_location(options.store)) {
#ifdef SOURCED_WITH_POSTGRES
    // The store's schema (the URL's schema= or "sourced") and everything in it: events, subscriptions,
    // the balances table and the projection state. A connection of the read-model store does it because
    // that is the SQL this program can run.
    sourced::PostgresProjectionStore models(options.store, {.schema = "sourced"});
    auto tx = models.begin_transaction();
    auto& pg = static_cast<sourced::PostgresProjectionTransaction&>(*tx);
    std::string quoted = "\"" + models.schema() + "\"";
    pg.execute("DROP SCHEMA " + quoted + " CASCADE");
    tx->commit();
#endif
    return;
  }
  std::string path = sqlite_path(options.store);
  for (auto suffix : {"", "-wal", "-shm", "-journal", "-leases"}) std::filesystem::remove(path + suffix);
}

void print_result(std::string_view what, const sourced::CommandResult& r) {
  if (r.rejected()) {
    fmt::print("  {}: rejected: {}\n", what, r.rejection->reason);
  } else {
    fmt::print("  {}: ok (version {}, position {})\n", what, r.stream_version.value(), r.position.value());
  }
}

}  // namespace

int run_scenario(const BankOptions& options) {
  try {
    const std::string mail_path = options.mail.empty() ? mail_path_for(options.store) : options.mail;
    if (!options.fresh) {
      if (auto why = foreign_events(options)) throw BadInput(*why);
    }
    wipe(options, mail_path);
    // Before the bank: its mailer thread writes into them until ~Bank stops it, also when a step throws.
    std::mutex mu;
    std::vector<std::string> mails;
    Bank bank(options);
    Transfers transfers(bank);  // registers the transfer commands on the bus before its first dispatch
    bank.run_balances();
    bank.run_mailer(true, [&](const std::string& to, const std::string& subject) {
      std::lock_guard lock(mu);
      mails.push_back(fmt::format("to {}: {}", to, subject));
    });
    const auto& bus = bank.bus();
    mark(bank.store(), kScenarioStarted);

    fmt::print("A fresh bank in {}\n\nOpening accounts and depositing:\n", options.store);
    print_result("open ada for Ada", bus.dispatch(OpenAccount{"ada", "Ada"}));
    print_result("open bob for Bob", bus.dispatch(OpenAccount{"bob", "Bob"}));
    print_result("deposit 100 into ada", bus.dispatch(Deposit{"ada", 100}));
    print_result("deposit 50 into bob", bus.dispatch(Deposit{"bob", 50}));

    fmt::print("\nA withdrawal the balance does not cover:\n");
    print_result("withdraw 80 from bob", bus.dispatch(Withdraw{"bob", 80}));

    // Two tellers, each with its own repository (as in two processes): teller 2 has loaded Ada's account
    // before teller 1 writes to it, so its append expects an old version, fails, and its repository
    // reloads the account and decides again on the new balance.
    fmt::print("\nTwo tellers race on ada:\n");
    AccountRepository teller1(bank.store(), account_events(), Account{});
    AccountRepository teller2(bank.store(), account_events(), Account{});
    auto seen = teller2.load("account-ada");
    fmt::print("  teller 2 loads ada: balance {} at version {}\n", seen.state.balance, seen.version.value());
    auto r1 = teller1.handle("account-ada", Withdraw{"ada", 70});
    print_result("teller 1 withdraws 70 from ada", r1);
    auto r2 = teller2.handle("account-ada", Withdraw{"ada", 20});
    print_result("teller 2 withdraws 20 from ada", r2);
    if (r2.attempts > 1) {
      fmt::print(
          "  teller 2's append expected version {}, found version {}: the repository reloaded ada and "
          "decided again (attempts: {})\n",
          seen.version.value(), r1.stream_version.value(), r2.attempts);
    }

    fmt::print("\nOpening and closing an account; a command repeated with its command id:\n");
    auto id = sourced::Uuid::v7();
    print_result("open cy for Cy", bus.dispatch(OpenAccount{"cy", "Cy"}, {.command_id = id}));
    auto again = bus.dispatch(OpenAccount{"cy", "Cy"}, {.command_id = id});
    fmt::print("  open cy again with command id {}: {}\n", id.to_string(),
               again.repeated ? "a repeat, nothing written" : "written again (wrong!)");
    print_result("close bob", bus.dispatch(CloseAccount{"bob"}));
    print_result("close cy", bus.dispatch(CloseAccount{"cy"}));
    print_result("deposit 5 into cy", bus.dispatch(Deposit{"cy", 5}));

    // Each transfer runs the process manager in this thread until the transfer has ended.
    fmt::print("\nTransfers, run by the process manager {} (debit, credit, and a refund when the credit is refused):\n",
               kTransferProcess);
    auto print_transfer = [](std::string_view what, const Transfers::Outcome& t) {
      fmt::print("  {}: {}\n", what, describe(t.state));
    };
    print_transfer("transfer 5 from bob to ada", transfers.transfer("bob", "ada", 5));
    print_transfer("transfer 10 from ada to cy", transfers.transfer("ada", "cy", 10));

    auto head = bank.store().head_position();
    bank.wait_for_balances(head);
    fmt::print("\nBalances, read from the projection {} (table bank_balances, at position {}):\n", kBalancesProjection,
               head.value());
    for (const auto& row : bank.balances().all()) fmt::print("{}\n", describe(row));

    auto* mailer = bank.run_mailer();
    auto mailed = last_account_event(bank.store());  // the mailer sees only account events
    if (!mailer->wait_for(mailed, std::chrono::seconds(10))) {
      throw sourced::StorageError("the mailer did not catch up with position " + std::to_string(mailed.value()));
    }
    {
      std::lock_guard lock(mu);
      fmt::print("\nE-mails the handler {} sent ({} in {}):\n", kMailerName, mails.size(), bank.mail_path());
      for (const auto& m : mails) fmt::print("  {}\n", m);
    }
    bank.stop();
    // Last: what lets the next run wipe this store without --fresh.
    mark(bank.store(), kScenarioFinished);
    return kExitOk;
  } catch (const std::exception& e) {
    return report_failure(e);
  }
}

}  // namespace bank
