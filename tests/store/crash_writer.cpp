// Child process of the crash test: appends to a SQLite store from several threads until it is killed
// (`crash_writer STORE`), or, with `crash_writer STORE one-shot`, opens the store, appends one batch and
// closes it again and again, as a sequence of CLI `append` processes would (so kills also land while a
// store closes and checkpoints its WAL). It writes one line to stdout per acknowledged append:
//   <batch-uuid> <stream> <first_version> <last_version> <first_position> <last_position>
// Each event's data names its batch, its index and the batch size, so the parent can tell a half-written
// append from a whole one.

#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "sourced/sqlite_store.hpp"

using namespace sourced;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: crash_writer STORE [one-shot]\n");
    return 2;
  }
  std::mutex out_mu;
  // Appends one batch of up to `max_size` events and reports it; false when stdout is gone.
  auto append_one = [&](EventStore& store, std::mt19937& rng, std::size_t max_size) {
    std::string stream = "crash-" + std::to_string(rng() % 6);
    std::size_t size = 1 + rng() % max_size;
    Uuid batch = Uuid::v4();
    std::vector<EventData> events;
    for (std::size_t i = 0; i < size; ++i) {
      events.push_back({.type = "Written",
                        .data = "{\"batch\":\"" + batch.to_string() + "\",\"index\":" + std::to_string(i) +
                                ",\"size\":" + std::to_string(size) + ",\"pad\":\"" + std::string(rng() % 300, 'x') +
                                "\"}"});
    }
    auto r = store.append(stream, ExpectedVersion::any(), events);
    std::string line = batch.to_string() + " " + stream + " " + std::to_string(r.first_version.value()) + " " +
                       std::to_string(r.last_version.value()) + " " + std::to_string(r.first_position.value()) + " " +
                       std::to_string(r.last_position.value()) + "\n";
    std::lock_guard lock(out_mu);
    return ::write(1, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  };
  if (argc > 2 && std::string(argv[2]) == "one-shot") {
    // Batches of up to 2,000 events (~0.4 MB): every few stores the WAL passes the size at which closing
    // checkpoints it.
    std::mt19937 rng(static_cast<unsigned>(::getpid()));
    for (;;) {
      auto store = open_sqlite_store(argv[1]);
      if (!append_one(*store, rng, 2000)) return 0;
    }
  }
  auto store = open_sqlite_store(argv[1]);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(::getpid() * 31 + t));
      while (append_one(*store, rng, 8)) {
      }
    });
  }
  for (auto& th : threads) th.join();
}
