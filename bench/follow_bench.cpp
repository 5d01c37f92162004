#include "follow_bench.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>

#include "sourced/command_bus.hpp"
#include "sourced/postgres_projection_store.hpp"
#include "sourced/projection.hpp"
#include "sourced/projection_partitions.hpp"
#include "sourced/repository.hpp"
#include "sourced/sqlite_projection_store.hpp"

namespace sourced::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPerAppend = 10;
constexpr int kWriters = 4;
constexpr int kStreams = 10000;

struct Deposited {
  long amount = 0;
  std::string note;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Deposited, amount, note)
using Events = EventRegistry<Deposited>;

struct Deposit {
  int account = 0;
  long amount = 0;
  std::string stream() const { return fmt::format("follow_account-{}", account); }
};

struct Account {
  using Event = Events::Event;
  struct State {
    long balance = 0;
  };
  static State initial_state() { return {}; }
  static Decision<Event> decide(const Deposit& c, const State&) { return Deposited{c.amount, std::string(170, 'n')}; }
  static State evolve(State s, const Event& e) {
    s.balance += std::get<Deposited>(e).amount;
    return s;
  }
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

std::string ms(double us) { return fmt::format("{:.2f} ms", us / 1000); }

// One row per stream (events applied, last position), an upsert per event: what a balance model does.
template <class Tx>
Projection<Tx> one_row_per_stream(const std::string& table, bool dollar) {
  std::string p = dollar ? "$" : "?";
  std::string upsert = fmt::format(
      "INSERT INTO {0} (stream, n, last) VALUES ({1}1, 1, {1}2) ON CONFLICT (stream) DO UPDATE SET n = {0}.n + 1, "
      "last = excluded.last",
      table, p);
  Projection<Tx> projection;
  projection.name = table;
  projection.setup = [table](Tx& tx) {
    tx.execute(fmt::format(
        "CREATE TABLE IF NOT EXISTS {} (stream TEXT PRIMARY KEY, n BIGINT NOT NULL, last BIGINT NOT NULL)", table));
  };
  projection.clear = [table](Tx& tx) { tx.execute("DELETE FROM " + table); };
  projection.handle = [upsert](Tx& tx, const RecordedEvent& e) { tx.execute(upsert, {e.stream, e.position.value()}); };
  return projection;
}

// The plain runner, or the partitioned one (4 partitions by stream, as the bank example runs its balances).
enum class Shape { plain, partitioned };

template <class Store>
void follow(EventStore& store, Store& models, std::string where, bool dollar, double seconds, int rate,
            Shape shape = Shape::plain) {
  using Tx = typename Store::Transaction;
  std::string table = fmt::format("bench_follow_{}{}", ::getpid(), shape == Shape::partitioned ? "_p" : "");
  std::optional<ProjectionRunner> plain;
  std::optional<PartitionedProjectionRunner> partitioned;
  if (shape == Shape::plain) {
    ProjectionRunnerOptions o{.start = StartMode::rebuild};
    o.progress = ProgressDisplay::none;
    plain.emplace(store, models, one_row_per_stream<Tx>(table, dollar), o);
  } else {
    PartitionedRunnerOptions o{.partitions = 4, .start = StartMode::rebuild};
    partitioned.emplace(store, models, one_row_per_stream<Tx>(table, dollar), o);
    where += ", partitioned runner (4)";
  }
  struct {
    ProjectionRunner* plain;
    PartitionedProjectionRunner* partitioned;
    WaitResult wait_for(Position p, std::chrono::milliseconds timeout) const {
      return plain ? plain->wait_for(p, timeout) : partitioned->wait_for(p, timeout);
    }
  } runner{plain ? &*plain : nullptr, partitioned ? &*partitioned : nullptr};
  if (runner.wait_for(store.head_position(), std::chrono::minutes(10)) != WaitResult::reached) {
    throw std::runtime_error("the projection did not catch up before the run");
  }

  Events events({"MoneyDeposited"});
  Repository<Account, Events> accounts(store, events);
  CommandBus bus;
  bus.register_projection(table, [&runner](Position p, std::chrono::milliseconds timeout) {
    return runner.wait_for(p, timeout) == WaitResult::reached;
  });
  // The handler returns just before the bus starts waiting: the wait's own share of a dispatch.
  thread_local Clock::time_point handled;
  bus.register_handler<Deposit>(
      [&](const Deposit& c, const CommandContext& ctx) {
        auto r = accounts.handle(ctx.stream, c, ctx.meta);
        handled = Clock::now();
        return r;
      },
      [](const Deposit& c) { return c.stream(); });

  // A waiter thread takes each acknowledged append in the order acknowledged and waits for the
  // projection to have committed it. With several writers an append may wait behind a later position
  // acknowledged before it: the lag measured is then an upper bound.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<Position, Clock::time_point>> acked;
  bool writing = true;
  std::vector<double> lag_us;
  std::uint64_t missed = 0;
  std::jthread waiter([&] {
    for (;;) {
      std::pair<Position, Clock::time_point> next;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return !acked.empty() || !writing; });
        if (acked.empty()) return;
        next = acked.front();
        acked.pop_front();
      }
      if (runner.wait_for(next.first, std::chrono::seconds(30)) != WaitResult::reached) {
        ++missed;  // counted, and reported as a failure of the run
        continue;
      }
      lag_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - next.second).count());
    }
  });
  // Commands alternate with and without the wait, so the dispatch's own cost under the same load is
  // beside it.
  std::vector<double> dispatch_us, wait_us, plain_us;
  std::atomic<bool> commands{true};
  std::uint64_t behind = 0;
  std::jthread client([&] {
    DispatchOptions wait{.wait_for = {table}, .timeout = std::chrono::seconds(5)};
    for (int i = 0; commands; ++i) {
      bool waits = i % 2 == 0;
      auto t0 = Clock::now();
      auto r = bus.dispatch(Deposit{i % 100, 5}, {}, waits ? wait : DispatchOptions{});
      auto t1 = Clock::now();
      if (!r.projections_caught_up()) ++behind;
      if (waits) {
        dispatch_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        wait_us.push_back(std::chrono::duration<double, std::micro>(t1 - handled).count());
      } else {
        plain_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  std::vector<EventData> batch;
  for (int i = 0; i < kPerAppend; ++i) {
    EventData e;
    e.type = "MoneyDeposited";
    e.data = R"({"amount":5,"note":")" + std::string(170, 'n') + R"("})";
    e.metadata = R"({"user":"user-1","source":"bench","pad":")" + std::string(20, 'x') + R"("})";
    batch.push_back(e);
  }
  // kWriters writers, each on its own fixed schedule (offset from the others), so one append's round
  // trip does not cap the rate.
  const auto interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(static_cast<double>(kPerAppend) * kWriters / rate));
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::atomic<std::uint64_t> appended{0};
  {
    std::vector<std::jthread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back([&, w] {
        std::mt19937_64 rng(7 + w);
        for (auto next = start + interval * w / kWriters; next < end; next += interval) {
          std::this_thread::sleep_until(next);
          auto r = store.append(fmt::format("follow-{}", rng() % kStreams), ExpectedVersion::any(), batch);
          auto acked_at = Clock::now();
          appended += kPerAppend;
          std::lock_guard lock(mu);
          acked.emplace_back(r.last_position, acked_at);
          cv.notify_one();
        }
      });
    }
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  commands = false;
  client.join();
  {
    std::lock_guard lock(mu);
    writing = false;
    cv.notify_one();
  }
  waiter.join();
  if (missed > 0) throw std::runtime_error(fmt::format("the projection did not reach {} appends within 30 s", missed));
  fmt::print(
      "| follow {:.0f} appended ev/s ({} writers, {} per append) for {:.1f} s, model in {} | lag p50 {} | p99 {} | max "
      "{} | target p99 < 100 ms |\n",
      appended.load() / elapsed, kWriters, kPerAppend, elapsed, where, ms(pct(lag_us, 0.5)), ms(pct(lag_us, 0.99)),
      ms(pct(lag_us, 1.0)));
  fmt::print(
      "| dispatch + wait_for on the bus ({} commands, {} behind), model in {} | p50 {} | p99 {} | the wait alone: p50 "
      "{}, p99 {} | target p99 < 10 ms |\n",
      dispatch_us.size(), behind, where, ms(pct(dispatch_us, 0.5)), ms(pct(dispatch_us, 0.99)), ms(pct(wait_us, 0.5)),
      ms(pct(wait_us, 0.99)));
  fmt::print("| dispatch without waiting, same load ({} commands) | p50 {} | p99 {} |\n", plain_us.size(),
             ms(pct(plain_us, 0.5)), ms(pct(plain_us, 0.99)));
  std::fflush(stdout);
}

}  // namespace

void bench_follow(EventStore& store, const std::string& location, double seconds, int rate) {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / fmt::format("sourced-bench-follow-{}", ::getpid());
  std::filesystem::create_directories(dir);
  {
    SqliteProjectionStore models((dir / "models.db").string());
    follow(store, models, "SQLite (another file)", false, seconds, rate);
    follow(store, models, "SQLite (another file)", false, seconds, rate, Shape::partitioned);
  }
  {
    // synchronous=NORMAL: no fsync per commit. The checkpoint commits with the rows, so a power loss
    // only takes the model back to an earlier checkpoint, which the runner replays from.
    SqliteProjectionStore models((dir / "models-normal.db").string(), {.durable = false});
    follow(store, models, "SQLite (another file, durable = false)", false, seconds, rate);
  }
  std::filesystem::remove_all(dir);
  if (location.starts_with("postgres://") || location.starts_with("postgresql://")) {
    std::string schema = fmt::format("sourced_bench_follow_{}", ::getpid());
    std::string url = location.substr(0, location.find("?schema="));
    url = url.substr(0, url.find("&schema="));
    PostgresProjectionStore models(url, {.schema = schema});
    follow(store, models, "PostgreSQL (same server)", true, seconds, rate);
    follow(store, models, "PostgreSQL (same server)", true, seconds, rate, Shape::partitioned);
  }
}

}  // namespace sourced::bench
