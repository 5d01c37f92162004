// A process running a partitioned projection for the partition crash tests: the test model (one row per
// stream, harness.hpp) from the events at EVENTS into MODELS (KIND sqlite: a file; postgres: a URL with
// ?schema=), PARTS partitions, following until it is killed. Prints "take P" and "drop P" as it takes and
// lets go of partitions, so a test sees who works what. Each event's handler waits DELAY_US microseconds.
//
//   partition_worker EVENTS KIND MODELS PARTS DELAY_US

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "sourced/open_store.hpp"
#include "sourced/postgres_projection_store.hpp"
#include "sourced/projection_partitions.hpp"
#include "sourced/sqlite_projection_store.hpp"

namespace {

template <class Store>
int run(sourced::EventStore& events, Store& models, bool dollar, std::uint32_t parts, int delay_us) {
  using Tx = typename Store::Transaction;
  std::string p = dollar ? "$" : "?";
  std::string upsert = "INSERT INTO counts (stream, n, pos_sum, last) VALUES (" + p + "1, 1, " + p + "2, " + p +
                       "2) ON CONFLICT (stream) DO UPDATE SET n = counts.n + 1, pos_sum = counts.pos_sum + "
                       "excluded.pos_sum, last = excluded.last";
  sourced::Projection<Tx> projection{
      .name = "counts",
      .handle =
          [&](Tx& tx, const sourced::RecordedEvent& e) {
            if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
            tx.execute(upsert, {e.stream, e.position.value()});
          },
      .setup =
          [](Tx& tx) {
            tx.execute(
                "CREATE TABLE IF NOT EXISTS counts (stream TEXT PRIMARY KEY, n BIGINT NOT NULL, pos_sum BIGINT "
                "NOT NULL, last BIGINT NOT NULL)");
          },
      .clear = [](Tx& tx) { tx.execute("DELETE FROM counts"); }};
  sourced::PartitionedRunnerOptions o{.partitions = parts,
                                      .batch_events = 50,
                                      .batch_interval = std::chrono::milliseconds(20),
                                      .takeover_interval = std::chrono::milliseconds(200)};
  o.progress = sourced::ProgressDisplay::none;
  o.on_lease = [](std::uint32_t partition, bool taken) {
    std::printf("%s %u\n", taken ? "take" : "drop", partition);
    std::fflush(stdout);
  };
  sourced::PartitionedProjectionRunner runner(events, models, std::move(projection), o);
  std::printf("started\n");
  std::fflush(stdout);
  while (runner.running()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return 1;  // only a failure ends it
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: partition_worker EVENTS KIND MODELS PARTS DELAY_US\n");
    return 2;
  }
  try {
    auto events = sourced::open_store(argv[1]);
    std::string kind = argv[2];
    auto parts = static_cast<std::uint32_t>(std::atoi(argv[4]));
    int delay = std::atoi(argv[5]);
    if (kind == "sqlite") {
      sourced::SqliteProjectionStore models(argv[3]);
      return run(*events, models, false, parts, delay);
    }
#ifdef SOURCED_WITH_POSTGRES
    sourced::PostgresProjectionStore models(argv[3]);
    return run(*events, models, true, parts, delay);
#else
    return 2;
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "partition_worker: %s\n", e.what());
    return 1;
  }
}
