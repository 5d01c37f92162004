#include "cqrs_bench.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "sourced/command_bus.hpp"
#include "sourced/repository.hpp"

namespace sourced::bench {
namespace {

using Clock = std::chrono::steady_clock;

// About 200 bytes of JSON, as the store's own workloads.
struct Opened {
  std::string owner;
};
struct Deposited {
  long amount = 0;
  std::string note;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Opened, owner)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Deposited, amount, note)
using Events = EventRegistry<Opened, Deposited>;

struct Deposit {
  int account = 0;
  long amount = 0;
  std::string note;
  std::string stream() const { return fmt::format("bench_account-{}", account); }
  std::optional<FieldError> validate() const {
    if (amount <= 0) return FieldError{"amount", "must be positive"};
    return std::nullopt;
  }
};

struct Account {
  using Event = Events::Event;
  struct State {
    long balance = 0;
    std::uint64_t events = 0;
  };
  static State initial_state() { return {}; }
  static Decision<Event> decide(const Deposit& c, const State&) { return Deposited{c.amount, c.note}; }
  static State evolve(State s, const Event& e) {
    if (const auto* d = std::get_if<Deposited>(&e)) s.balance += d->amount;
    ++s.events;
    return s;
  }
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Account::State, balance, events)

const std::string kNote(170, 'n');  // brings the event's data to ~200 bytes

struct Run {
  double seconds = 0;
  std::uint64_t calls = 0;
  std::vector<double> micros;
  double rate() const { return calls / seconds; }
  double pct(double p) {
    if (micros.empty()) return 0;
    std::size_t i = std::min(micros.size() - 1, static_cast<std::size_t>(p * micros.size()));
    std::nth_element(micros.begin(), micros.begin() + i, micros.end());
    return micros[i];
  }
};

// `clients` threads call `call(client, i)` until `seconds` pass.
template <class Call>
Run run_clients(int clients, double seconds, Call call) {
  std::atomic<bool> go{false};
  std::vector<std::vector<double>> lat(clients);
  std::vector<std::uint64_t> done(clients, 0);
  std::vector<std::thread> pool;
  Clock::time_point deadline;
  for (int c = 0; c < clients; ++c) {
    pool.emplace_back([&, c] {
      while (!go.load()) std::this_thread::yield();
      for (std::uint64_t i = 0; Clock::now() < deadline; ++i) {
        auto t0 = Clock::now();
        call(c, i);
        lat[c].push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        ++done[c];
      }
    });
  }
  auto start = Clock::now();
  deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  go = true;
  for (auto& t : pool) t.join();
  Run run;
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (int c = 0; c < clients; ++c) {
    run.calls += done[c];
    run.micros.insert(run.micros.end(), lat[c].begin(), lat[c].end());
  }
  return run;
}

std::string us(double v) { return v >= 10000 ? fmt::format("{:.1f} ms", v / 1000) : fmt::format("{:.0f} µs", v); }

constexpr int kAccounts = 500;  // per client count: separate sets, so each phase starts short
constexpr int kHistory = 10;    // events per account before the runs: "a short aggregate"

std::string account_stream(int set, int account) { return fmt::format("bench_account-{}", set * kAccounts + account); }

void fill_accounts(EventStore& store, const Events& events, int set) {
  if (store.stream_info(account_stream(set, 0))) return;
  std::vector<std::thread> fillers;
  for (int f = 0; f < 16; ++f) {
    fillers.emplace_back([&, f] {
      for (int a = f; a < kAccounts; a += 16) {
        std::vector<EventData> history = {events.encode(Opened{"owner"})};
        for (int i = 1; i < kHistory; ++i) history.push_back(events.encode(Deposited{i, kNote}));
        store.append(account_stream(set, a), ExpectedVersion::no_stream(), history);
      }
    });
  }
  for (auto& t : fillers) t.join();
}

void bench_dispatch(EventStore& store, const Events& events, int set, int clients, double seconds) {
  fill_accounts(store, events, set);
  Repository<Account, Events> accounts(store, events);
  Repository<Account, Events> uncached(store, events, {}, {.cached_states = 0});
  CommandBus bus, uncached_bus;
  bus.register_handler<Deposit>(accounts);
  uncached_bus.register_handler<Deposit>(uncached);
  // Client c works on accounts c, c + clients, ...: different aggregates, no conflicts. Plain appends
  // go to streams of their own, so the accounts grow only by the dispatched events.
  auto account_of = [&](int c, std::uint64_t i) {
    return set * kAccounts + static_cast<int>((c + i * clients) % (kAccounts - kAccounts % clients));
  };
  const EventData payload = events.encode(Deposited{5, kNote});
  auto plain = [&](int c, std::uint64_t i) {
    store.append(fmt::format("bench_plain-{}", account_of(c, i)), ExpectedVersion::any(), {payload});
  };
  auto via = [&](const CommandBus& b, bool with_id) {
    return [&b, with_id, &account_of](int c, std::uint64_t i) {
      CommandMeta meta;
      if (with_id) meta.command_id = Uuid::v7();
      auto r = b.dispatch(Deposit{account_of(c, i), 5, kNote}, meta);
      if (r.events_written != 1) throw std::runtime_error("a bench command wrote nothing");
    };
  };
  // Without the cache first, while the accounts are shortest; then the cache is warmed (one load per
  // account, as a running application has its active aggregates) and plain and dispatch runs alternate,
  // so drift (the WAL growing, the page cache) falls on both sides alike.
  Run reads = run_clients(clients, seconds, via(uncached_bus, false));
  for (int a = 0; a < kAccounts; ++a) accounts.load(account_stream(set, a));
  Run p1 = run_clients(clients, seconds, plain);
  Run d1 = run_clients(clients, seconds, via(bus, false));
  Run p2 = run_clients(clients, seconds, plain);
  Run d2 = run_clients(clients, seconds, via(bus, false));
  Run ids = run_clients(clients, seconds, via(bus, true));
  auto row = [&](const char* what, Run& r) {
    fmt::print("| {} | {:>2} clients | {:>8.0f} cmd/s | p50 {:>8} | p99 {:>8} |\n", what, clients, r.rate(),
               us(r.pct(0.5)), us(r.pct(0.99)));
  };
  row("dispatch, no state cache (reads the stream)", reads);
  row("plain append of the event", p1);
  row("dispatch: load, decide, append", d1);
  row("plain append of the event", p2);
  row("dispatch: load, decide, append", d2);
  row("dispatch with a command id", ids);
  double plain_rate = (p1.calls + p2.calls) / (p1.seconds + p2.seconds);
  double dispatch_rate = (d1.calls + d2.calls) / (d1.seconds + d2.seconds);
  fmt::print(
      "| dispatch overhead | {:>2} clients | {:+.1f}% time per event (target <= 15%); no state cache {:+.1f}% |\n",
      clients, 100.0 * (plain_rate / dispatch_rate - 1), 100.0 * (plain_rate / reads.rate() - 1));
  std::fflush(stdout);
}

void bench_long_load(EventStore& store, const Events& events) {
  const std::string stream = "bench_long-1";
  constexpr int kEvents = 10000;
  if (!store.stream_info(stream)) {
    std::vector<EventData> batch = {events.encode(Opened{"owner"})};
    while (batch.size() < 1000) batch.push_back(events.encode(Deposited{1, kNote}));
    store.append(stream, ExpectedVersion::no_stream(), batch);
    batch.erase(batch.begin());
    batch.push_back(events.encode(Deposited{1, kNote}));
    for (int i = 1; i < kEvents / 1000; ++i) store.append(stream, ExpectedVersion::any(), batch);
  }
  auto time_loads = [&](const Repository<Account, Events>& repo, int loads, const char* what) {
    std::vector<double> micros;
    Repository<Account, Events>::State state;
    std::uint64_t folded = 0;
    for (int i = 0; i < loads; ++i) {
      auto t0 = Clock::now();
      auto loaded = repo.load(stream);
      micros.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      state = loaded.state;
      folded = loaded.events_folded;
    }
    if (state.events != kEvents) throw std::runtime_error(fmt::format("loaded {} of {} events", state.events, kEvents));
    std::sort(micros.begin(), micros.end());
    fmt::print("| load a {}-event aggregate, {} | {} events folded | p50 {:>8} | p99 {:>8} |\n", kEvents, what, folded,
               us(micros[micros.size() / 2]), us(micros[std::min(micros.size() - 1, micros.size() * 99 / 100)]));
  };
  Repository<Account, Events> plain(store, events, {}, {.cached_states = 0});
  time_loads(plain, 20, "no snapshot");
  Repository<Account, Events> snapshots(store, events, {}, {.snapshot_every = 1000, .cached_states = 0});
  if (!snapshots.save_snapshot(stream)) throw std::runtime_error("the snapshot was not written");
  time_loads(snapshots, 1000, "from a snapshot");
  std::fflush(stdout);
}

}  // namespace

void bench_cqrs(EventStore& store, double seconds, const std::vector<int>& client_counts) {
  Events events({"AccountOpened", "MoneyDeposited"});
  for (std::size_t i = 0; i < client_counts.size(); ++i) {
    bench_dispatch(store, events, static_cast<int>(i), client_counts[i], seconds);
  }
  bench_long_load(store, events);
}

}  // namespace sourced::bench
