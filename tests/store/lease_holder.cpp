// A consumer process for the registry's lease tests: opens the store at LOCATION (any engine, see
// open_store), takes the lease of subscription NAME (waiting for it), prints "held" and keeps it until it
// is killed. Exits 1 (with the error on stderr) when it cannot take it.
//
//   lease_holder LOCATION NAME

#include <chrono>
#include <iostream>
#include <thread>

#include "sourced/open_store.hpp"
#include "sourced/subscription_registry.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: lease_holder LOCATION NAME\n";
    return 2;
  }
  try {
    auto store = sourced::open_store(argv[1]);
    auto lease = store->subscriptions().acquire(argv[2], true, std::chrono::minutes(1));
    std::cout << "held" << std::endl;
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  } catch (const std::exception& e) {
    std::cerr << "lease_holder: " << e.what() << "\n";
    return 1;
  }
}
