// A projection process for the crash tests: runs the test model (one row per stream, see harness.hpp)
// from the events at EVENTS (any open_store() location) into the read-model store MODELS (KIND sqlite: a
// file; postgres: a URL with ?schema=), rebuilding or resuming, and follows until it is killed. Each
// event's handler waits DELAY_US microseconds, so a test can kill it in the middle of a batch.
//
//   projection_worker EVENTS KIND MODELS rebuild|resume DELAY_US

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

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

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: projection_worker EVENTS KIND MODELS rebuild|resume DELAY_US\n";
    return 2;
  }
  try {
    auto events = sourced::open_store(argv[1]);
    std::string kind = argv[2];
    auto mode = std::string(argv[4]) == "rebuild" ? sourced::StartMode::rebuild : sourced::StartMode::resume;
    int delay = std::atoi(argv[5]);
    if (kind == "sqlite") {
      sourced::SqliteProjectionStore models(argv[3]);
      return run(*events, models, false, mode, delay);
    }
#ifdef SOURCED_WITH_POSTGRES
    sourced::PostgresProjectionStore models(argv[3]);
    return run(*events, models, true, mode, delay);
#else
    return 2;
#endif
  } catch (const std::exception& e) {
    std::cerr << "projection_worker: " << e.what() << "\n";
    return 1;
  }
}
