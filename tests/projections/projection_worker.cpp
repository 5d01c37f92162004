// A projection process for the crash tests: runs the test model (one row per stream, see harness.hpp)
// from the events at EVENTS (any open_store() location) into the read-model store MODELS (KIND sqlite: a
// file; postgres: a URL with ?schema=), rebuilding or resuming, and follows until it is killed. Each
// event's handler waits DELAY_US microseconds, so a test can kill it in the middle of a batch.
// blue_green_1 and blue_green_2 run the blue/green model (blue_green_model.hpp) through a BlueGreenRunner
// with version 1, or versions 1 and 2 (version 2's handler waiting DELAY_US per event);
// partitioned_blue_green_1 and _2 the same with every version in 4 partitions.
//
//   projection_worker EVENTS KIND MODELS rebuild|resume|[partitioned_]blue_green_1|[partitioned_]blue_green_2 DELAY_US

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "projections/blue_green_model.hpp"
#include "sourced/blue_green.hpp"
#include "sourced/open_store.hpp"
#include "sourced/postgres_projection_store.hpp"
#include "sourced/sqlite_projection_store.hpp"

namespace {

template <class Store>
int run(sourced::EventStore& events, Store& models, bool dollar, sourced::StartMode mode, int delay_us) {
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
  sourced::ProjectionRunnerOptions o{
      .start = mode, .batch_events = 50, .batch_interval = std::chrono::milliseconds(20)};
  o.progress = sourced::ProgressDisplay::none;
  sourced::ProjectionRunner runner(events, models, std::move(projection), o);
  std::cout << "started" << std::endl;
  while (runner.running()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return 1;  // only a failure ends it
}

template <class Store>
int run_blue_green(sourced::EventStore& events, Store& models, int versions, int delay_us, bool partitioned) {
  using Tx = typename Store::Transaction;
  std::vector<sourced::Projection<Tx>> v{sourced::testing::counts_version<Tx>(1)};
  if (versions == 2) v.push_back(sourced::testing::counts_version<Tx>(2, delay_us));
  sourced::BlueGreenOptions o{.tables = {"counts"}};
  o.runner.batch_events = 50;
  o.runner.batch_interval = std::chrono::milliseconds(20);
  o.runner.progress = sourced::ProgressDisplay::none;
  if (partitioned) {
    sourced::PartitionedRunnerOptions p;
    p.partitions = 4;
    p.batch_events = 50;
    p.batch_interval = std::chrono::milliseconds(20);
    p.takeover_interval = std::chrono::milliseconds(100);
    p.progress = sourced::ProgressDisplay::none;
    o.partitioned = p;
  }
  sourced::BlueGreenRunner runner(events, models, std::move(v), o);
  std::cout << "started" << std::endl;
  for (;;) {
    if (runner.error()) return 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

template <class Store>
int run_mode(sourced::EventStore& events, Store& models, bool dollar, const std::string& mode, int delay_us) {
  if (mode == "blue_green_1") return run_blue_green(events, models, 1, delay_us, false);
  if (mode == "blue_green_2") return run_blue_green(events, models, 2, delay_us, false);
  if (mode == "partitioned_blue_green_1") return run_blue_green(events, models, 1, delay_us, true);
  if (mode == "partitioned_blue_green_2") return run_blue_green(events, models, 2, delay_us, true);
  return run(events, models, dollar, mode == "rebuild" ? sourced::StartMode::rebuild : sourced::StartMode::resume,
             delay_us);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: projection_worker EVENTS KIND MODELS "
                 "rebuild|resume|[partitioned_]blue_green_1|[partitioned_]blue_green_2 DELAY_US\n";
    return 2;
  }
  try {
    auto events = sourced::open_store(argv[1]);
    std::string kind = argv[2];
    std::string mode = argv[4];
    int delay = std::atoi(argv[5]);
    if (kind == "sqlite") {
      sourced::SqliteProjectionStore models(argv[3]);
      return run_mode(*events, models, false, mode, delay);
    }
#ifdef SOURCED_WITH_POSTGRES
    sourced::PostgresProjectionStore models(argv[3]);
    return run_mode(*events, models, true, mode, delay);
#else
    return 2;
#endif
  } catch (const std::exception& e) {
    std::cerr << "projection_worker: " << e.what() << "\n";
    return 1;
  }
}
