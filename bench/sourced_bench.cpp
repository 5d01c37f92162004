// sourced_bench: the workloads users compare event stores on, with events/s and latency percentiles.
//
//   sourced_bench [--store LOCATION] [--seconds S]
//                 [--only append|read|memory|ids|subscribe|cqrs|projection|follow|paced]
//                 [--memory-events N] [--paced-rate N]
//
// Without --store, a fresh SQLite file in a temporary directory (durable settings) is used and removed.
// Events carry ~200 bytes of JSON data and ~60 of metadata and go to 10,000 streams.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <unordered_map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cqrs_bench.hpp"
#include "follow_bench.hpp"
#include "sourced/open_store.hpp"
#include "sourced/persistent_subscription.hpp"
#include "sourced/postgres_projection_store.hpp"
#include "sourced/sqlite_projection_store.hpp"
#include "sourced/sqlite_store.hpp"
#include "sourced/store.hpp"
#include "sourced/subscription.hpp"

using namespace sourced;
using SteadyClock = std::chrono::steady_clock;  // not sourced::Clock, the injectable one

namespace {

constexpr int kStreams = 10000;

std::string padded(std::string head, std::size_t size) {
  // head is a JSON object missing its closing brace; pad a string field to reach `size` bytes.
  std::string s = head + ",\"pad\":\"";
  std::size_t fill = size > s.size() + 2 ? size - s.size() - 2 : 0;
  return s + std::string(fill, 'x') + "\"}";
}

EventData make_event(std::mt19937_64& rng) {
  EventData e;
  e.type = "MoneyDeposited";
  e.data = padded(fmt::format(R"({{"account":"account-{}","amount":{},"currency":"EUR","note":"bench")",
                              rng() % kStreams, rng() % 100000),
                  200);
  e.metadata = padded(fmt::format(R"({{"user":"user-{}","source":"bench")", rng() % 1000), 60);
  return e;
}

struct Latencies {
  std::vector<double> micros;
  double pct(double p) {
    if (micros.empty()) return 0;
    std::size_t i = std::min(micros.size() - 1, static_cast<std::size_t>(p * micros.size()));
    std::nth_element(micros.begin(), micros.begin() + i, micros.end());
    return micros[i];
  }
};

std::string fmt_rate(double per_second) { return fmt::format("{:>12.0f}", per_second); }

std::string fmt_us(double us) {
  if (us >= 10000) return fmt::format("{:.1f} ms", us / 1000);
  return fmt::format("{:.0f} µs", us);
}

// A "VmXXX:" field of /proc/self/status, in KiB.
long status_kib(std::string_view field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.starts_with(field)) return std::stol(line.substr(field.size()));
  }
  return -1;
}
long peak_rss_kib() { return status_kib("VmHWM:"); }
long current_rss_kib() { return status_kib("VmRSS:"); }

void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

struct TimedRun {
  double seconds;        // wall time of the whole run
  std::uint64_t events;  // events all threads handled
  Latencies latency;     // one sample per call
};

// Runs `threads` threads that repeat `call` (which returns the events it handled) until `seconds` pass,
// timing every call.
template <class Call>
TimedRun run_timed(int threads, double seconds, Call call) {
  std::atomic<bool> go{false};
  std::vector<Latencies> lat(threads);
  std::vector<std::uint64_t> handled(threads, 0);
  std::vector<std::thread> pool;
  SteadyClock::time_point deadline;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(t * 7919 + 17);
      while (!go.load()) std::this_thread::yield();
      while (SteadyClock::now() < deadline) {
        auto t0 = SteadyClock::now();
        handled[t] += call(t, rng);
        lat[t].micros.push_back(std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count());
      }
    });
  }
  auto start = SteadyClock::now();
  deadline = start + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(seconds));
  go = true;
  for (auto& th : pool) th.join();
  TimedRun run{std::chrono::duration<double>(SteadyClock::now() - start).count(), 0, {}};
  for (int t = 0; t < threads; ++t) {
    run.latency.micros.insert(run.latency.micros.end(), lat[t].micros.begin(), lat[t].micros.end());
    run.events += handled[t];
  }
  return run;
}

// Uuid::v7, the id the store generates for every event that arrives without one, made by N threads at
// once (no store involved): what the id generator's synchronisation costs under many writers.
void bench_ids(int threads, double seconds) {
  std::vector<std::uint8_t> sink(threads);
  auto run = run_timed(threads, seconds, [&](int t, std::mt19937_64&) {
    for (int i = 0; i < 1000; ++i) sink[t] ^= Uuid::v7().bytes()[15];
    return std::uint64_t{1000};
  });
  fmt::print("| Uuid::v7 | {:>3} threads | {} ids/s |\n", threads, fmt_rate(run.events / run.seconds));
  std::fflush(stdout);
}

void bench_append(EventStore& store, int writers, int batch, double seconds) {
  std::vector<std::vector<EventData>> payloads(writers);
  for (int w = 0; w < writers; ++w) {
    std::mt19937_64 rng(w * 31 + batch);
    for (int i = 0; i < batch; ++i) payloads[w].push_back(make_event(rng));
  }
  auto run = run_timed(writers, seconds, [&](int w, std::mt19937_64& rng) {
    store.append(fmt::format("account-{}", rng() % kStreams), ExpectedVersion::any(), payloads[w]);
    return static_cast<std::uint64_t>(batch);
  });
  fmt::print("| append | {:>3} writers | batch {:>4} | {} ev/s | p50 {:>9} | p99 {:>9} | {:>9} events |\n", writers,
             batch, fmt_rate(run.events / run.seconds), fmt_us(run.latency.pct(0.5)), fmt_us(run.latency.pct(0.99)),
             run.events);
  std::fflush(stdout);
}

void bench_read_stream(EventStore& store, int readers, double seconds) {
  const std::string stream = "bench-read-1000";
  if (!store.stream_info(stream)) {
    std::mt19937_64 rng(1);
    std::vector<EventData> events;
    for (int i = 0; i < 1000; ++i) events.push_back(make_event(rng));
    store.append(stream, ExpectedVersion::no_stream(), events);
  }
  auto run = run_timed(readers, seconds, [&](int, std::mt19937_64&) {
    std::uint64_t n = 0;
    std::size_t bytes = 0;
    for (const auto& e : store.read_stream(stream)) {
      ++n;
      bytes += e.data.size();
    }
    if (n != 1000 || bytes == 0) throw std::runtime_error("short read of the 1,000-event stream");
    return n;
  });
  fmt::print("| read 1,000-event stream | {:>3} readers | {} ev/s | p50 {:>9} | p99 {:>9} per stream read |\n", readers,
             fmt_rate(run.events / run.seconds), fmt_us(run.latency.pct(0.5)), fmt_us(run.latency.pct(0.99)));
  std::fflush(stdout);
}

// `readers` threads read $all together: each reads its own contiguous slice, so together they read every
// event once.
void bench_read_all(EventStore& store, int readers) {
  std::uint64_t head = store.head_position().value();
  std::uint64_t slice = (head + readers - 1) / readers;
  std::vector<std::uint64_t> read(readers, 0);
  std::vector<std::thread> threads;
  auto start = SteadyClock::now();
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      std::uint64_t from = 1 + r * slice;
      std::uint64_t n = 0;
      std::size_t bytes = 0;
      for (const auto& e : store.read_all({.from = Position(from), .max_count = slice})) {
        ++n;
        bytes += e.data.size() + e.stream.size();
      }
      read[r] = bytes ? n : 0;
    });
  }
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(SteadyClock::now() - start).count();
  std::uint64_t total = 0;
  for (auto n : read) total += n;
  if (total != head) throw std::runtime_error(fmt::format("read {} of {} events of $all", total, head));
  fmt::print("| read $all ({} events) | {:>3} readers | {} ev/s | {:.2f} s |\n", head, readers,
             fmt_rate(total / elapsed), elapsed);
  std::fflush(stdout);
}

// One writer appending `rate` events/s for `seconds` in batches of `batch`, each batch due at a fixed time
// from the start (a late batch goes at once, so the rate is kept on average): the load that `sourced read
// --follow` must keep up with (bench/cli.sh). Prints the rate reached and how late batches were.
void bench_paced(EventStore& store, double seconds, int rate, int batch_size) {
  std::mt19937_64 rng(7);
  std::vector<EventData> batch;
  for (int i = 0; i < batch_size; ++i) batch.push_back(make_event(rng));
  auto total = static_cast<std::uint64_t>(seconds * rate);
  auto start = SteadyClock::now();
  std::uint64_t done = 0;
  Latencies late;
  while (done < total) {
    auto due = start + std::chrono::duration_cast<SteadyClock::duration>(
                           std::chrono::duration<double>(static_cast<double>(done) / rate));
    std::this_thread::sleep_until(due);
    late.micros.push_back(std::chrono::duration<double, std::micro>(SteadyClock::now() - due).count());
    store.append(fmt::format("account-{}", rng() % kStreams), ExpectedVersion::any(), batch);
    done += batch.size();
  }
  double elapsed = std::chrono::duration<double>(SteadyClock::now() - start).count();
  fmt::print(
      "| paced append, 1 writer, batch {} ({} events, target {} ev/s) | {} ev/s | batch late p50 {} | p99 {} |\n",
      batch_size, done, rate, fmt_rate(done / elapsed), fmt_us(late.pct(0.5)), fmt_us(late.pct(0.99)));
  std::fflush(stdout);
}

void bench_memory(EventStore& store, std::uint64_t events) {
  std::uint64_t head = store.head_position().value();
  if (head < events) {
    fmt::print("filling the store to {} events...\n", events);
    std::mt19937_64 rng(99);
    std::vector<EventData> batch;
    for (int i = 0; i < 1000; ++i) batch.push_back(make_event(rng));
    while (head < events) {
      auto r = store.append(fmt::format("account-{}", rng() % kStreams), ExpectedVersion::any(), batch);
      head = r.last_position.value();
    }
  }
  reset_peak_rss();
  long before = current_rss_kib();
  auto start = SteadyClock::now();
  std::uint64_t n = 0;
  for (const auto& e : store.read_all({.max_count = events})) n += !e.data.empty();
  double elapsed = std::chrono::duration<double>(SteadyClock::now() - start).count();
  fmt::print("| read {} events of $all | {} ev/s | peak RSS {:.1f} MiB (RSS before {:.1f} MiB) |\n", n,
             fmt_rate(n / elapsed), peak_rss_kib() / 1024.0, before / 1024.0);
}

}  // namespace

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch()).count();
}

// The writer of the cross-process latency workload (sourced_bench --latency-writer): appends `count`
// events `pause_us` apart, each stamped with the steady clock (shared by every process) before its append.
int latency_writer(const std::string& location, int count, int pause_us) {
  auto store = open_store(location);
  for (int i = 0; i < count; ++i) {
    EventData e;
    e.type = "Stamped";
    e.data = fmt::format(R"({{"t":{}}})", steady_ns());
    store->append(fmt::format("latency-{}", i % 100), ExpectedVersion::any(), {e});
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
  }
  return 0;
}

void fill_to(EventStore& store, std::uint64_t events) {
  std::uint64_t head = store.head_position().value();
  if (head >= events) return;
  fmt::print("filling the store to {} events...\n", events);
  std::fflush(stdout);
  std::mt19937_64 rng(99);
  std::vector<EventData> batch;
  for (int i = 0; i < 1000; ++i) batch.push_back(make_event(rng));
  while (head < events)
    head =
        store.append(fmt::format("account-{}", rng() % kStreams), ExpectedVersion::any(), batch).last_position.value();
}

// Append-to-delivery latency of a live subscriber: the writer is a thread of this process, or another
// process (this program with --latency-writer).
void bench_latency(EventStore& store, const std::string& location, bool other_process, int count) {
  auto sub =
      subscribe_to_all(store, {.start = SubscriptionStart::end(), .filter = EventFilter{.event_types = {"Stamped"}}});
  while (auto m = sub.next(std::chrono::seconds(5))) {
    if (m->kind == SubscriptionMessage::Kind::caught_up) break;
  }
  constexpr int kPauseUs = 2000;
  std::thread writer;
  if (other_process) {
    std::string cmd = fmt::format("'/proc/{}/exe' --latency-writer --store '{}' --latency-events {} >/dev/null",
                                  ::getpid(), location, count);
    writer = std::thread([cmd] { [[maybe_unused]] int rc = std::system(cmd.c_str()); });
  } else {
    writer = std::thread([&] {
      for (int i = 0; i < count; ++i) {
        EventData e;
        e.type = "Stamped";
        e.data = fmt::format(R"({{"t":{}}})", steady_ns());
        store.append(fmt::format("latency-{}", i % 100), ExpectedVersion::any(), {e});
        std::this_thread::sleep_for(std::chrono::microseconds(kPauseUs));
      }
    });
  }
  Latencies lat;
  while (static_cast<int>(lat.micros.size()) < count) {
    auto m = sub.next(std::chrono::seconds(30));
    if (!m) break;
    if (m->kind != SubscriptionMessage::Kind::event) continue;
    auto t = std::stoll(m->event->data.substr(5));
    lat.micros.push_back((steady_ns() - t) / 1000.0);
  }
  writer.join();
  fmt::print("| live subscriber, writer in {} | {} events | p50 {:>9} | p99 {:>9} | p99.9 {:>9} |\n",
             other_process ? "another process" : "the same process", lat.micros.size(), fmt_us(lat.pct(0.5)),
             fmt_us(lat.pct(0.99)), fmt_us(lat.pct(0.999)));
  std::fflush(stdout);
}

// A persistent subscription to $all from the origin, its consumer acking every event (progress saved with
// the default settings: every 1,000 acks or 2 s), against the read of $all of the same run.
void bench_persistent(EventStore& store, std::uint64_t head, double read_s) {
  std::string name = fmt::format("bench-{}", ::getpid());
  create_persistent_subscription(store, name, {});
  auto start = SteadyClock::now();
  std::uint64_t delivered = 0;
  std::size_t bytes = 0;
  {
    auto sub = open_persistent_subscription(store, name);
    while (delivered < head) {
      auto d = sub.next(std::chrono::seconds(10));
      if (!d) break;
      ++delivered;
      bytes += d->event->data.size();
      sub.ack(d->key);
    }
  }  // closed: the last progress saved
  double s = std::chrono::duration<double>(SteadyClock::now() - start).count();
  auto info = persistent_subscription_info(store, name);
  delete_persistent_subscription(store, name);
  if (delivered != head || !info || info->checkpoint != head)
    throw std::runtime_error(fmt::format("the persistent subscription delivered {} of {}", delivered, head));
  fmt::print("| persistent subscription to $all, acking every event ({} events) | {} ev/s | {:.0f}% of read $all |\n",
             delivered, fmt_rate(delivered / s), 100.0 * read_s / s);
  std::fflush(stdout);
}

// A catch-up subscription over the whole store against a plain read of $all, in the same run.
void bench_subscribe(EventStore& store, const std::string& location, std::uint64_t events, double seconds,
                     int latency_events) {
  fill_to(store, events);
  std::uint64_t head = store.head_position().value();
  auto start = SteadyClock::now();
  std::uint64_t n = 0;
  std::size_t bytes = 0;
  for (const auto& e : store.read_all()) {
    ++n;
    bytes += e.data.size();
  }
  double read_s = std::chrono::duration<double>(SteadyClock::now() - start).count();
  fmt::print("| read $all ({} events) | {} ev/s |\n", n, fmt_rate(n / read_s));
  reset_peak_rss();
  start = SteadyClock::now();
  auto sub = subscribe_to_all(store);
  std::uint64_t delivered = 0;
  while (auto m = sub.next(std::chrono::seconds(10))) {
    if (m->kind == SubscriptionMessage::Kind::caught_up) break;
    if (m->kind == SubscriptionMessage::Kind::event) {
      ++delivered;
      bytes += m->event->data.size();
    }
  }
  double sub_s = std::chrono::duration<double>(SteadyClock::now() - start).count();
  if (delivered != head) throw std::runtime_error(fmt::format("the subscription delivered {} of {}", delivered, head));
  fmt::print("| catch-up subscription to $all ({} events) | {} ev/s | {:.0f}% of read $all | peak RSS {:.1f} MiB |\n",
             delivered, fmt_rate(delivered / sub_s), 100.0 * read_s / sub_s, peak_rss_kib() / 1024.0);
  std::fflush(stdout);
  bench_persistent(store, head, read_s);
  // An idle live subscriber: the CPU the whole process uses while it waits.
  {
    auto idle = subscribe_to_all(store, {.start = SubscriptionStart::end()});
    idle.next(std::chrono::seconds(1));  // caught_up; the wake-up machinery starts
    struct rusage a {
    }, b{};
    getrusage(RUSAGE_SELF, &a);
    auto t0 = SteadyClock::now();
    while (SteadyClock::now() - t0 < std::chrono::duration<double>(seconds)) {
      idle.next(std::chrono::milliseconds(500));
    }
    getrusage(RUSAGE_SELF, &b);
    auto cpu = [](const struct rusage& r) {
      return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
    };
    double wall = std::chrono::duration<double>(SteadyClock::now() - t0).count();
    fmt::print("| idle live subscriber | {:.2f}% of a core (whole process) |\n", 100.0 * (cpu(b) - cpu(a)) / wall);
  }
  bench_latency(store, location, false, latency_events);
  bench_latency(store, location, true, latency_events);
}

// Rebuilds a projection that keeps one row per stream (events applied, last position) from every event of
// the store, into a read-model store; returns events/s. `coalesce`: the handler buffers its rows in memory
// and writes each stream's row once per batch (end_batch) instead of one upsert per event.
template <class Store>
double bench_rebuild(EventStore& events, Store& models, bool dollar, bool coalesce, std::size_t batch) {
  using Tx = typename Store::Transaction;
  std::string p = dollar ? "$" : "?";
  std::string table = coalesce ? "bench_rows_coalesced" : "bench_rows";
  std::string upsert = fmt::format(
      "INSERT INTO {0} (stream, n, last) VALUES ({1}1, {1}2, {1}3) ON CONFLICT (stream) DO UPDATE SET n = {0}.n + "
      "excluded.n, last = excluded.last",
      table, p);
  std::unordered_map<std::string, std::pair<std::int64_t, std::int64_t>> rows;
  Projection<Tx> projection;
  projection.name = table;
  projection.setup = [&](Tx& tx) {
    tx.execute(
        fmt::format("CREATE TABLE IF NOT EXISTS {} (stream TEXT PRIMARY KEY, n BIGINT NOT NULL, last BIGINT "
                    "NOT NULL)",
                    table));
  };
  projection.clear = [&](Tx& tx) { tx.execute("DELETE FROM " + table); };
  if (coalesce) {
    projection.handle = [&](Tx&, const RecordedEvent& e) {
      auto& r = rows[e.stream];
      r.first += 1;
      r.second = static_cast<std::int64_t>(e.position.value());
    };
    projection.begin_batch = [&](Tx&) { rows.clear(); };
    projection.end_batch = [&](Tx& tx) {
      for (auto& [stream, r] : rows) tx.execute(upsert, {stream, r.first, r.second});
    };
  } else {
    projection.handle = [&](Tx& tx, const RecordedEvent& e) { tx.execute(upsert, {e.stream, 1, e.position.value()}); };
  }
  ProjectionRunnerOptions o{.start = StartMode::rebuild, .batch_events = batch, .stop_when_caught_up = true};
  o.progress = ProgressDisplay::none;
  std::uint64_t head = events.head_position().value();
  auto start = SteadyClock::now();
  ProjectionRunner runner(events, models, std::move(projection), o);
  runner.wait_until_stopped(std::chrono::hours(1));
  if (auto e = runner.error()) std::rethrow_exception(e);
  double secs = std::chrono::duration<double>(SteadyClock::now() - start).count();
  auto state = models.load_state({table, 1, ""});
  if (!state || state->checkpoint.value() != head) throw std::runtime_error("the rebuild did not reach the head");
  return head / secs;
}

void bench_projection(EventStore& store, const std::string& location, std::uint64_t events, std::size_t batch) {
  fill_to(store, events);
  std::uint64_t head = store.head_position().value();
  auto start = SteadyClock::now();
  std::uint64_t n = 0;
  std::size_t bytes = 0;
  for (const auto& e : store.read_all()) {
    ++n;
    bytes += e.data.size();
  }
  double read_s = std::chrono::duration<double>(SteadyClock::now() - start).count();
  fmt::print("| read $all ({} events) | {} ev/s |\n", n, fmt_rate(n / read_s));
  std::fflush(stdout);
  auto row = [&](const char* where, const char* how, double rate) {
    fmt::print("| rebuild one row per stream ({} events) into {} | {} | {} ev/s | {:.0f}% of read $all |\n", head,
               where, how, fmt_rate(rate), 100.0 * rate * read_s / n);
    std::fflush(stdout);
  };
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / fmt::format("sourced-bench-models-{}", ::getpid());
  std::filesystem::create_directories(dir);
  {
    SqliteProjectionStore models((dir / "models.db").string());
    row("SQLite (another file)", "upsert per event", bench_rebuild(store, models, false, false, batch));
    row("SQLite (another file)", "rows buffered per batch", bench_rebuild(store, models, false, true, batch));
  }
  std::filesystem::remove_all(dir);
  if (location.starts_with("postgres://") || location.starts_with("postgresql://")) {
    std::string schema = fmt::format("sourced_bench_models_{}", ::getpid());
    std::string url = location.substr(0, location.find("?schema="));
    url = url.substr(0, url.find("&schema="));
    PostgresProjectionStore models(url, {.schema = schema});
    row("PostgreSQL (same server)", "upsert per event (pipelined)", bench_rebuild(store, models, true, false, batch));
    row("PostgreSQL (same server)", "rows buffered per batch", bench_rebuild(store, models, true, true, batch));
    models.query(fmt::format("SELECT 1 FROM pg_namespace WHERE nspname = '{}'", schema), {}, [](const SqlRow&) {});
  }
}

int main(int argc, char** argv) {
  CLI::App app{"sourced_bench: event store workloads"};
  std::string location;
  double seconds = 2;
  std::string only;
  std::uint64_t memory_events = 0;
  std::vector<int> writer_counts = {1, 10, 100}, batch_sizes = {1, 10, 100, 1000};
  app.add_option("--store", location,
                 "Store location (SQLite path or postgres:// URL); default: a temporary SQLite file");
  app.add_option("--seconds", seconds, "Seconds per timed workload")->capture_default_str();
  app.add_option("--only", only,
                 "Run only this group: append, read, memory, ids, subscribe, cqrs, projection, follow or paced");
  double follow_seconds = 10;
  int follow_rate = 10000;
  app.add_option("--follow-seconds", follow_seconds, "For --only follow: seconds of sustained appends")
      ->capture_default_str();
  app.add_option("--follow-rate", follow_rate, "For --only follow: appended events per second")->capture_default_str();
  int paced_rate = 100000;
  app.add_option("--paced-rate", paced_rate, "For --only paced: events/s one writer appends (batches of --batch)")
      ->capture_default_str();
  std::vector<int> cqrs_clients = {1, 16};
  app.add_option("--cqrs-clients", cqrs_clients, "For --only cqrs: concurrent clients")->capture_default_str();
  app.add_option("--memory-events", memory_events, "For --only memory: events to read (the store is filled first)");
  int read_cache_kib = 0;
  app.add_option("--read-cache-kib", read_cache_kib,
                 "A SQLite file's reader connections get this page cache (SqliteOptions::read_cache_kib; 0: "
                 "SQLite's default), as the sourced CLI's reads do with 256");
  app.add_option("--writers", writer_counts, "Writer counts for the append workloads")->capture_default_str();
  app.add_option("--batch", batch_sizes, "Batch sizes for the append workloads")->capture_default_str();
  std::uint64_t subscribe_events = 1'000'000;
  app.add_option("--subscribe-events", subscribe_events, "For --only subscribe: events in the store (filled first)");
  std::uint64_t projection_events = 1'000'000;
  std::size_t projection_batch = 10000;
  app.add_option("--projection-events", projection_events, "For --only projection: events in the store (filled first)");
  app.add_option("--projection-batch", projection_batch, "For --only projection: events per committed batch");
  bool latency_writer_mode = false;
  int latency_events = 2000;
  app.add_flag("--latency-writer", latency_writer_mode, "Internal: the writer process of the latency workload");
  app.add_option("--latency-events", latency_events, "Internal: events the latency writer appends");
  CLI11_PARSE(app, argc, argv);
  if (latency_writer_mode) return latency_writer(location, latency_events, 2000);

  std::filesystem::path tmp;
  if (location.empty()) {
    tmp = std::filesystem::temp_directory_path() / fmt::format("sourced-bench-{}", ::getpid());
    std::filesystem::create_directories(tmp);
    location = (tmp / "bench.db").string();
  }
  int rc = 0;
  try {
    auto store = read_cache_kib > 0 && location.find("://") == std::string::npos && location != "memory:"
                     ? open_sqlite_store(location.starts_with("sqlite:") ? location.substr(7) : location,
                                         {.read_cache_kib = read_cache_kib})
                     : open_store(location);
    unsigned cores = std::thread::hardware_concurrency();
    fmt::print("sourced_bench: engine {}, {} cores, {:.1f} s per timed workload\n\n", store->stats().engine, cores,
               seconds);
    if (only.empty() || only == "append") {
      for (int writers : writer_counts) {
        for (int batch : batch_sizes) bench_append(*store, writers, batch, seconds);
      }
    }
    if (only.empty() || only == "read") {
      for (int readers : {1, 10, 100}) bench_read_stream(*store, readers, seconds);
      for (int readers : {1, 10, 100}) bench_read_all(*store, readers);
    }
    if (only == "subscribe") bench_subscribe(*store, location, subscribe_events, seconds, latency_events);
    if (only == "cqrs") bench::bench_cqrs(*store, seconds, cqrs_clients);
    if (only == "projection") bench_projection(*store, location, projection_events, projection_batch);
    if (only == "follow") bench::bench_follow(*store, location, follow_seconds, follow_rate);
    if (only == "paced") bench_paced(*store, seconds, paced_rate, batch_sizes.front());
    if (only == "memory") bench_memory(*store, memory_events ? memory_events : 10'000'000);
    if (only == "ids") {
      for (int threads : {1, 100}) bench_ids(threads, seconds);
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    fmt::print("\npeak RSS of the whole run: {:.1f} MiB\n", ru.ru_maxrss / 1024.0);
  } catch (const std::exception& e) {
    fmt::print(stderr, "sourced_bench: {}\n", e.what());
    rc = 1;
  }
  if (!tmp.empty()) std::filesystem::remove_all(tmp);
  return rc;
}
