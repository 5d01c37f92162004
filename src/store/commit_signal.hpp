#pragma once
// CommitSignal: how an engine wakes the threads waiting in wait_for_events_after() as soon as one of its
// own commits lands, while still polling for commits made by other processes (which it cannot see).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "sourced/event.hpp"

namespace sourced::detail {

// About 30 years: long enough to mean "forever", short enough not to overflow steady_clock.
inline constexpr std::int64_t kMaxWaitMs = 1'000'000'000'000;

class CommitSignal {
 public:
  // Called after every commit (or attempt): wakes all waiters.
  void committed() {
    {
      std::lock_guard lock(mu_);
      ++commits_;
    }
    cv_.notify_all();
  }

  // Returns the head once it is past `after`, or at `timeout`. `head` reads the current head position;
  // it is read again after each local commit and at least every `poll`.
  Position wait(Position after, std::chrono::milliseconds timeout, const std::function<Position()>& head,
                std::chrono::milliseconds poll = std::chrono::milliseconds(50)) {
    // Clamped so that "wait forever" (milliseconds::max()) cannot overflow the clock.
    auto deadline = std::chrono::steady_clock::now() + std::min(timeout, std::chrono::milliseconds(kMaxWaitMs));
    for (;;) {
      std::uint64_t seen;
      {
        std::lock_guard lock(mu_);
        seen = commits_;
      }
      Position current = head();
      auto now = std::chrono::steady_clock::now();
      if (current > after || now >= deadline) return current;
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, std::min(deadline, now + poll), [&] { return commits_ != seen; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t commits_ = 0;
};

}  // namespace sourced::detail
