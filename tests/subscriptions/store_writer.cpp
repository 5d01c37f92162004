// A writer process for the subscription tests: opens the store at LOCATION (any engine, see open_store)
// and appends COUNT events one append at a time to the streams PREFIX-0 .. PREFIX-9, pausing PAUSE_US
// microseconds between appends. Each event's data holds {"i": N, "t": steady_clock nanoseconds before its
// append}. Prints "done" and exits 0 when every append succeeded, 1 otherwise.
//
//   store_writer LOCATION PREFIX COUNT PAUSE_US

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "sourced/open_store.hpp"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: store_writer LOCATION PREFIX COUNT PAUSE_US\n";
    return 2;
  }
  try {
    auto store = sourced::open_store(argv[1]);
    std::string prefix = argv[2];
    int count = std::atoi(argv[3]);
    auto pause = std::chrono::microseconds(std::atoi(argv[4]));
    for (int i = 0; i < count; ++i) {
      sourced::EventData e;
      e.type = "Written";
      // When the append started, on the clock every process shares, for latency checks.
      auto t = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
                   .count();
      e.data = "{\"i\":" + std::to_string(i) + ",\"t\":" + std::to_string(t) + "}";
      store->append(prefix + "-" + std::to_string(i % 10), sourced::ExpectedVersion::any(), {e});
      if (pause.count() > 0) std::this_thread::sleep_for(pause);
    }
  } catch (const std::exception& e) {
    std::cerr << "store_writer: " << e.what() << "\n";
    return 1;
  }
  std::cout << "done\n";
  return 0;
}
