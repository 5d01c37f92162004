// A consumer process for the persistent subscription tests: opens the store at LOCATION (any engine, see
// open_store), opens subscription NAME as its consumer (waiting for the lease), prints "held", then for
// each delivery prints "KEY ATTEMPT" and acknowledges it, until it is killed. Saves progress every 10
// acks or 100 ms, so a SIGKILL loses at most the acks since. Exits 1 (with the error on stderr) when it
// cannot go on.
//
//   persistent_consumer LOCATION NAME

#include <chrono>
#include <cstdio>
#include <iostream>

#include "sourced/open_store.hpp"
#include "sourced/persistent_subscription.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: persistent_consumer LOCATION NAME\n";
    return 2;
  }
  try {
    auto store = sourced::open_store(argv[1]);
    auto sub = sourced::open_persistent_subscription(*store, argv[2],
                                                     {.wait_for_lease = true,
                                                      .lease_timeout = std::chrono::minutes(2),
                                                      .checkpoint_after_acks = 10,
                                                      .checkpoint_after = std::chrono::milliseconds(100)});
    std::printf("held\n");
    std::fflush(stdout);
    for (;;) {
      auto d = sub.next(std::chrono::seconds(1));
      if (!d) continue;
      std::printf("%llu %u\n", static_cast<unsigned long long>(d->key), d->attempt);
      std::fflush(stdout);
      sub.ack(d->key);
    }
  } catch (const std::exception& e) {
    std::cerr << "persistent_consumer: " << e.what() << "\n";
    return 1;
  }
}
