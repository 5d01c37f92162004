// A writer process for the PostgreSQL ordering test (postgres_test.cpp): THREADS threads append small
// batches to a few shared streams for SECONDS seconds and print each acknowledged append as a line
// "FIRST_POSITION COUNT". Exits 0 when every append succeeded, 1 otherwise.
//
//   pg_writer URL SCHEMA THREADS SECONDS

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "sourced/postgres_store.hpp"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: pg_writer URL SCHEMA THREADS SECONDS\n";
    return 2;
  }
  sourced::PostgresOptions options;
  options.schema = argv[2];
  int threads = std::atoi(argv[3]);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::atoi(argv[4]) * 1000);
  std::unique_ptr<sourced::EventStore> store;
  try {
    store = sourced::open_postgres_store(argv[1], options);
  } catch (const std::exception& e) {
    std::cerr << "pg_writer: " << e.what() << "\n";
    return 1;
  }
  std::mutex out_mu;
  std::string out;
  bool failed = false;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(::getpid() * 100 + t));
      std::string local;
      std::optional<sourced::Uuid> last_id;
      for (int i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
        // Few streams shared by every process, so appends also contend on stream rows.
        std::string stream = "order-" + std::to_string(rng() % 16);
        std::vector<sourced::EventData> batch(1 + rng() % 3);
        if (i % 7 == 5) batch.front().id = last_id = sourced::Uuid::v4();  // reused by the next append
        for (auto& e : batch) {
          e.type = "Written";
          e.data = "{\"pid\":" + std::to_string(::getpid()) + ",\"thread\":" + std::to_string(t) +
                   ",\"i\":" + std::to_string(i) + "}";
        }
        // Some appends fail inside their group, which must leave no hole in the positions: a guessed
        // expected version (usually stale) and a reused event id (from an earlier append of this thread).
        auto expected = sourced::ExpectedVersion::any();
        if (i % 4 == 3) expected = sourced::ExpectedVersion::exact(rng() % 50);
        bool reuse = i % 7 == 6 && last_id;
        if (reuse) batch.front().id = last_id;
        try {
          auto r = store->append(stream, expected, batch);
          if (!r.replayed) {
            local += std::to_string(r.first_position.value()) + " " + std::to_string(batch.size()) + "\n";
          }
        } catch (const sourced::WrongExpectedVersion&) {
          // expected: the guess was stale
        } catch (const sourced::DuplicateEventId&) {
          // expected: the id is stored elsewhere
        } catch (const std::exception& e) {
          std::lock_guard lock(out_mu);
          std::cerr << "pg_writer: " << e.what() << "\n";
          failed = true;
          return;
        }
      }
      std::lock_guard lock(out_mu);
      out += local;
    });
  }
  for (auto& th : pool) th.join();
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return failed ? 1 : 0;
}
