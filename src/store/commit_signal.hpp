#pragma once
// CommitSignal: how an engine wakes the threads waiting in wait_for_events_after() as soon as one of its
// own commits lands, while still polling for commits made by other processes (which it cannot see).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stop_token>

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

  // For the store's destructor, before anything else: wakes every waiter, makes them return as on a
  // timeout, and blocks until they have all left; waits that start later return at once.
  void close() {
    std::unique_lock lock(mu_);
    closed_ = true;
    cv_.notify_all();
    left_.wait(lock, [&] { return waiters_ == 0; });
  }

  // Returns the head once it is past `after`, at `timeout`, or when `stop` is requested (then the head as
  // it is). After close(), returns `after` without reading the head. `head` reads the current head position;
  // it is read again after each local commit and at least every `poll`.
  Position wait(Position after, std::chrono::milliseconds timeout, std::stop_token stop,
                const std::function<Position()>& head, std::chrono::milliseconds poll = std::chrono::milliseconds(50)) {
    // Clamped so that "wait forever" (milliseconds::max()) cannot overflow the clock.
    auto deadline = std::chrono::steady_clock::now() + std::min(timeout, std::chrono::milliseconds(kMaxWaitMs));
    {
      std::lock_guard lock(mu_);
      if (closed_) return after;
      ++waiters_;
    }
    struct Leave {
      CommitSignal* self;
      ~Leave() {
        std::lock_guard lock(self->mu_);
        if (--self->waiters_ == 0 && self->closed_) self->left_.notify_all();
      }
    } leave{this};
    for (;;) {
      std::uint64_t seen;
      {
        std::lock_guard lock(mu_);
        if (closed_) return after;
        seen = commits_;
      }
      Position current = head();
      auto now = std::chrono::steady_clock::now();
      if (current > after || now >= deadline || stop.stop_requested()) return current;
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, stop, std::min(deadline, now + poll), [&] { return commits_ != seen || closed_; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::condition_variable left_;
  std::uint64_t commits_ = 0;
  int waiters_ = 0;
  bool closed_ = false;
};

}  // namespace sourced::detail
