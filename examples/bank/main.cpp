// The bank example on the embedded SQLite store: accounts as streams of typed events, optimistic
// concurrency between two tellers, balances folded from the events, and the global log `$all`.
//
//   bank [PATH]      (default ./bank.db; the file is created fresh on each run)

#include <filesystem>
#include <variant>

#include <fmt/format.h>

#include "sourced/serializer.hpp"
#include "sourced/sqlite_store.hpp"
#include "sourced/store.hpp"

using namespace sourced;

namespace {

// The events of an account, serialized as JSON by sourced::JsonSerializer.
struct AccountOpened {
  std::string owner;
};
struct MoneyDeposited {
  long amount = 0;
  std::string from;
};
struct MoneyWithdrawn {
  long amount = 0;
  std::string to;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AccountOpened, owner)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(MoneyDeposited, amount, from)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(MoneyWithdrawn, amount, to)

struct Account {
  std::string owner;
  long balance = 0;
  StreamVersion version;  // what the next append expects
};

// evolve: state × event → state. Pure, but decoding an event can fail: event_data_as throws
// SerializationError naming the event when the stored bytes do not fit the type.
void apply(Account& a, const RecordedEvent& e) {
  if (e.type == "AccountOpened") a.owner = event_data_as<AccountOpened>(e).owner;
  if (e.type == "MoneyDeposited") a.balance += event_data_as<MoneyDeposited>(e).amount;
  if (e.type == "MoneyWithdrawn") a.balance -= event_data_as<MoneyWithdrawn>(e).amount;
  a.version = e.version;
}

Account load(EventStore& store, const std::string& stream) {
  Account a;
  auto reader = store.read_stream(stream);
  if (reader.state() == EventReader::State::stream_not_found) return a;
  for (const RecordedEvent& e : reader) apply(a, e);
  return a;
}

// decide: the withdrawal, or why not.
std::variant<EventData, std::string> withdraw(const Account& a, long amount, std::string to = {}) {
  if (amount > a.balance) return fmt::format("{} cannot withdraw {}: the balance is {}", a.owner, amount, a.balance);
  return to_event_data("MoneyWithdrawn", MoneyWithdrawn{amount, std::move(to)});
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : "bank.db";
  for (auto suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  try {
    auto store = open_sqlite_store(path);

    fmt::print("Opening two accounts in {}\n", path);
    store->append("account-ada", ExpectedVersion::no_stream(),
                  {to_event_data("AccountOpened", AccountOpened{"Ada"}),
                   to_event_data("MoneyDeposited", MoneyDeposited{100, ""})});
    store->append("account-bob", ExpectedVersion::no_stream(), {to_event_data("AccountOpened", AccountOpened{"Bob"})});

    // Two tellers load Ada's account at the same version; the second to write loses and decides again.
    Account teller1 = load(*store, "account-ada");
    Account teller2 = load(*store, "account-ada");
    store->append("account-ada", ExpectedVersion::exact(teller1.version), {std::get<EventData>(withdraw(teller1, 70))});
    fmt::print("Teller 1 withdrew 70 at version {}\n", teller1.version.value());
    try {
      store->append("account-ada", ExpectedVersion::exact(teller2.version),
                    {std::get<EventData>(withdraw(teller2, 50))});
    } catch (const WrongExpectedVersion& e) {
      fmt::print("Teller 2 was refused: {}\n", e.what());
      Account fresh = load(*store, "account-ada");
      auto decision = withdraw(fresh, 50);
      if (auto* why = std::get_if<std::string>(&decision)) fmt::print("Teller 2 reloads and decides again: {}\n", *why);
    }

    // A transfer as two appends, each checked against the version it was decided on.
    Account ada = load(*store, "account-ada");
    Account bob = load(*store, "account-bob");
    store->append("account-ada", ExpectedVersion::exact(ada.version),
                  {std::get<EventData>(withdraw(ada, 20, "account-bob"))});
    store->append("account-bob", ExpectedVersion::exact(bob.version),
                  {to_event_data("MoneyDeposited", MoneyDeposited{20, "account-ada"})});

    for (const char* stream : {"account-ada", "account-bob"}) {
      Account a = load(*store, stream);
      fmt::print("{}: owner {}, balance {}, version {}\n", stream, a.owner, a.balance, a.version.value());
    }

    fmt::print("\nThe global log $all:\n");
    for (const RecordedEvent& e : store->read_all()) {
      fmt::print("  #{} {}@{} {} {}\n", e.position.value(), e.stream, e.version.value(), e.type, e.data);
    }
    auto stats = store->stats();
    fmt::print("\n{} streams, head position {}\n", stats.streams, stats.head.value());
  } catch (const Error& e) {
    fmt::print(stderr, "bank: {}\n", e.what());
    return 1;
  }
  return 0;
}
