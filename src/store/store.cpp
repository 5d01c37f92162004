#include "sourced/store.hpp"

#include <thread>

#include "store/commit_signal.hpp"

namespace sourced {

Position EventStore::wait_for_events_after(Position after, std::chrono::milliseconds timeout, std::stop_token stop) {
  // Engines without a notification of their own poll, backing off to 50 ms.
  auto deadline = std::chrono::steady_clock::now() + std::min(timeout, std::chrono::milliseconds(detail::kMaxWaitMs));
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    Position head = head_position();
    if (head > after || std::chrono::steady_clock::now() >= deadline || stop.stop_requested()) return head;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(pause, deadline - std::chrono::steady_clock::now()));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace sourced
