// The bank example on the embedded SQLite store: accounts as streams of events, optimistic concurrency
// between two tellers, balances folded from the events, and the global log `$all`.
//
//   bank [PATH]      (default ./bank.db; the file is created fresh on each run)

#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sourced/sqlite_store.hpp"
#include "sourced/store.hpp"

using namespace sourced;
using json = nlohmann::json;

namespace {

EventData make(std::string type, json data) {
  return EventData{.type = std::move(type), .data = data.dump(), .metadata = json{{"app", "bank"}}.dump()};
}

struct Account {
  std::string owner;
  long balance = 0;
  StreamVersion version;
};

// Folds an account's events into its state: the evolve half of a decider.
Account load(EventStore& store, const std::string& stream) {
  Account a;
  auto reader = store.read_stream(stream);
  if (reader.state() == EventReader::State::stream_not_found) return a;
  for (const RecordedEvent& e : reader) {
    auto d = json::parse(e.data);
    if (e.type == "AccountOpened") a.owner = d["owner"];
    if (e.type == "MoneyDeposited") a.balance += d["amount"].get<long>();
    if (e.type == "MoneyWithdrawn") a.balance -= d["amount"].get<long>();
    a.version = e.version;
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : "bank.db";
  for (auto suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  try {
    auto store = open_sqlite_store(path);

    fmt::print("Opening two accounts in {}\n", path);
    store->append("account-ada", ExpectedVersion::no_stream(),
                  {make("AccountOpened", {{"owner", "Ada"}}), make("MoneyDeposited", {{"amount", 100}})});
    store->append("account-bob", ExpectedVersion::no_stream(), {make("AccountOpened", {{"owner", "Bob"}})});

    // Two tellers load Ada's account at the same version; the second to write loses.
    Account teller1 = load(*store, "account-ada");
    Account teller2 = load(*store, "account-ada");
    store->append("account-ada", ExpectedVersion::exact(teller1.version), {make("MoneyWithdrawn", {{"amount", 70}})});
    fmt::print("Teller 1 withdrew 70 at version {}\n", teller1.version.value());
    try {
      store->append("account-ada", ExpectedVersion::exact(teller2.version),
                    {make("MoneyWithdrawn", {{"amount", 50}})});
    } catch (const WrongExpectedVersion& e) {
      fmt::print("Teller 2 was refused: {}\n", e.what());
      Account fresh = load(*store, "account-ada");
      fmt::print("Teller 2 reloads: balance {} at version {}; a withdrawal of 50 would overdraw, so it is not made\n",
                 fresh.balance, fresh.version.value());
    }

    // A transfer as two appends, each checked against the version it was decided on.
    Account ada = load(*store, "account-ada");
    Account bob = load(*store, "account-bob");
    store->append("account-ada", ExpectedVersion::exact(ada.version),
                  {make("MoneyWithdrawn", {{"amount", 20}, {"to", "account-bob"}})});
    store->append("account-bob", ExpectedVersion::exact(bob.version),
                  {make("MoneyDeposited", {{"amount", 20}, {"from", "account-ada"}})});

    for (const char* stream : {"account-ada", "account-bob"}) {
      Account a = load(*store, stream);
      fmt::print("{}: owner {}, balance {}, version {}\n", stream, a.owner, a.balance, a.version.value());
    }

    fmt::print("\nThe global log $all:\n");
    for (const RecordedEvent& e : store->read_all()) {
      fmt::print("  #{} {}@{} {} {}\n", e.position.value(), e.stream, e.version.value(), e.type, e.data);
    }
    auto stats = store->stats();
    fmt::print("\n{} streams, {} events, head position {}\n", stats.streams, stats.events, stats.head.value());
  } catch (const Error& e) {
    fmt::print(stderr, "bank: {}\n", e.what());
    return 1;
  }
  return 0;
}
