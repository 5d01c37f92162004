// A process running the test bank's transfer process manager, for the SIGKILL tests: opens the store at
// LOCATION (any engine, see open_store), takes the "transfers" subscription's lease (waiting for a killed
// predecessor's to go), prints "held", then prints "POSITION" for each event it has handled and acked,
// until it is killed. Saves progress every 3 acks, so a SIGKILL usually leaves acked events to be
// delivered again. Exits 1 (with the error on stderr) when it cannot go on.
//
//   transfer_worker LOCATION

#include <chrono>
#include <cstdio>
#include <iostream>

#include "cqrs/transfer_app.hpp"
#include "sourced/open_store.hpp"

int main(int argc, char** argv) {
  using namespace sourced;
  if (argc != 2) {
    std::cerr << "usage: transfer_worker LOCATION\n";
    return 2;
  }
  try {
    auto store = open_store(argv[1]);
    testing::bank::TransferApp app(*store);
    app.manager.create_subscription();
    auto sub = open_persistent_subscription(*store, app.manager.name(),
                                            {.wait_for_lease = true,
                                             .lease_timeout = std::chrono::minutes(2),
                                             .checkpoint_after_acks = 3,
                                             .checkpoint_after = std::chrono::milliseconds(50)});
    std::printf("held\n");
    std::fflush(stdout);
    for (;;) {
      auto d = sub.next(std::chrono::seconds(1));
      if (!d) continue;
      app.manager.handle(*d->event);
      sub.ack(d->key);
      std::printf("%llu\n", static_cast<unsigned long long>(d->key));
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::cerr << "transfer_worker: " << e.what() << "\n";
    return 1;
  }
}
