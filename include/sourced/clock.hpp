#pragma once
// The one injectable clock: what components that decide by time (retry back-off, when to save a
// checkpoint, leases, idle timeouts) ask for "now", so tests can move time instead of waiting for it.
// Components take a `Clock&` (defaulting to Clock::steady()) and never call a std clock themselves; waits
// still happen in real time (on the store), and re-ask the clock when they end.
//
// Thread-safety: every Clock here may be used from many threads at once. Lifetimes: Clock::steady()
// lives for the whole program; a ManualClock must outlive what it was given to.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace sourced {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;

  // std::chrono::steady_clock.
  static Clock& steady();
};

// A clock that moves only when told to (tests). Starts at an arbitrary fixed point.
class ManualClock final : public Clock {
 public:
  ManualClock() : ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::hours(1)).count()) {}
  TimePoint now() const override { return TimePoint(std::chrono::nanoseconds(ns_.load())); }
  void advance(std::chrono::nanoseconds d) { ns_ += d.count(); }

 private:
  std::atomic<std::int64_t> ns_;
};

}  // namespace sourced
