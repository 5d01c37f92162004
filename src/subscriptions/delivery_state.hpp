#pragma once
// The decisions of a persistent subscription's consumer, with no I/O: what to deliver next (a due
// retry, a parked event marked for replay, or a new event from the source), what acknowledgements and
// failures settle, when an event is parked, where the checkpoint is, and what to save when. Time comes
// in as arguments (from the injectable Clock), so tests drive it step by step; tests/subscriptions/
// delivery_state_test.cpp checks it against a reference model with random operations.
//
// Keys are the subscription's keys (positions for `$all`, versions for a stream). New events come in
// increasing key order, all above the checkpoint; replayed events are parked ones, at or below it.
// An event is *unsettled* from its delivery until it is acknowledged or parked; in_flight() counts the
// unsettled events, delivered or waiting for a retry, and never exceeds max_in_flight.
//
// Not thread-safe: one consumer thread owns it.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "sourced/clock.hpp"

namespace sourced::detail {

struct DeliveryLimits {
  std::uint32_t max_in_flight = 100;
  std::uint32_t max_attempts = 10;
  // The wait before the second delivery of a failed event; doubled for each later one, up to the cap.
  std::chrono::milliseconds retry_backoff{100};
  std::chrono::milliseconds retry_backoff_max{10'000};
  // Save after this many acknowledgements, or this long after the last save when anything changed.
  std::uint32_t checkpoint_after_acks = 1000;
  std::chrono::milliseconds checkpoint_after{2000};
};

// What the consumer should do now.
struct DeliveryStep {
  enum class Kind {
    retry,   // deliver `key` again (a failed event whose back-off has passed): redeliver()
    replay,  // deliver the parked event `key`: replay()
    pull,    // take the next event from the source (delivered()) or a scan notice (scanned())
    wait,    // the in-flight limit is reached: nothing to deliver until an ack, a nack or `wake_at`
  };
  Kind kind = Kind::pull;
  std::uint64_t key = 0;
  // When a retry becomes due (pull and wait: the longest the source may be waited on); max() when none.
  Clock::TimePoint wake_at = Clock::TimePoint::max();
};

struct ParkRecord {
  std::uint64_t key = 0;
  std::uint32_t attempts = 0;
  std::string error;
  friend bool operator==(const ParkRecord&, const ParkRecord&) = default;
};

// What one save writes, all at once.
struct ProgressSnapshot {
  std::uint64_t checkpoint = 0;
  // Only events at or below `checkpoint`: a parked event is written with the checkpoint that passes it, so
  // after a crash an event is either parked (and not redelivered) or redelivered (and not parked).
  std::vector<ParkRecord> newly_parked;
  std::vector<std::uint64_t> unparked;  // replayed parked events now acknowledged
  std::uint64_t in_flight = 0;
  std::optional<std::string> last_error;  // a failure reported since the last save
};

class DeliveryState {
 public:
  // `checkpoint`: the saved one; new events come after it.
  DeliveryState(DeliveryLimits limits, std::uint64_t checkpoint, Clock::TimePoint now);

  DeliveryStep step(Clock::TimePoint now) const;

  // The source delivered event `key` (above every key before it). Returns its attempt number (1).
  std::uint32_t delivered(std::uint64_t key);
  // The source looked through `key` without finding more to deliver (filtered out, or caught up).
  void scanned(std::uint64_t key);
  // Delivers a due retry (step() said so). Returns its attempt number.
  std::uint32_t redeliver(std::uint64_t key);
  // A parked event at or below the checkpoint is marked for replay. False (ignored) when it is already
  // being replayed, or its re-parking or unparking is not saved yet.
  bool replay_requested(std::uint64_t key);
  // Delivers a requested replay (step() said so). Returns its attempt number.
  std::uint32_t replay(std::uint64_t key);
  // Forgets a requested replay that cannot be delivered (the event is gone). It will be unparked.
  void replay_gone(std::uint64_t key);

  // Cumulative: settles the outstanding delivery of `key` and every delivery handed out before it that
  // is still outstanding (not failed). Returns the keys it settled, in delivery order; none when `key` is
  // not outstanding.
  std::vector<std::uint64_t> ack(std::uint64_t key);
  enum class NackOutcome { unknown, retry, parked, skipped };
  // What the consumer asks for a failed delivery (EventStoreDB's nack actions).
  enum class NackAction {
    retry,  // again after a back-off; parked once it was delivered max_attempts times
    park,   // parked now, whatever its attempts
    skip,   // settled as if acknowledged (that delivery only, not cumulative); the error is recorded
  };
  // The delivery of `key` failed: what `action` says. Every action records `error` as the last error.
  NackOutcome nack(std::uint64_t key, std::string error, Clock::TimePoint now, NackAction action = NackAction::retry);

  std::uint64_t checkpoint() const;
  std::uint64_t in_flight() const { return main_.size() + replays_.size(); }
  bool outstanding(std::uint64_t key) const;

  // Whether to save now: enough acks, or time passed with something to save.
  bool save_due(Clock::TimePoint now) const;
  // When a save becomes due by time (max() when nothing is unsaved).
  Clock::TimePoint save_at() const;
  bool unsaved() const;
  ProgressSnapshot progress() const;
  // `snapshot` (from progress()) was written: forget what it carried.
  void saved(const ProgressSnapshot& snapshot, Clock::TimePoint now);

  const DeliveryLimits& limits() const { return limits_; }

 private:
  struct Entry {
    std::uint32_t attempts = 0;
    bool outstanding = false;
    Clock::TimePoint retry_at{};
  };
  struct Delivery {
    std::uint64_t key;
    bool replay;
  };
  std::map<std::uint64_t, Entry>& table(bool replay) { return replay ? replays_ : main_; }
  std::chrono::milliseconds backoff(std::uint32_t attempts) const;
  void settle(const Delivery& d);

  DeliveryLimits limits_;
  std::uint64_t scanned_;                   // every new event at or before it was delivered or filtered out
  std::map<std::uint64_t, Entry> main_;     // unsettled new events
  std::map<std::uint64_t, Entry> replays_;  // unsettled replays (delivered or retrying)
  std::set<std::uint64_t> replay_queue_;    // requested replays not delivered yet
  std::deque<Delivery> outstanding_;        // delivered and not yet acknowledged or failed, in delivery order
  std::set<std::pair<Clock::TimePoint, std::pair<std::uint64_t, bool>>> retries_;  // (due, (key, replay))
  std::vector<ParkRecord> parked_;                                                 // parked, not saved yet
  std::vector<std::uint64_t> unparked_;    // replays acknowledged, not saved yet
  std::optional<std::string> last_error_;  // not saved yet
  std::uint64_t saved_checkpoint_;
  std::uint64_t saved_in_flight_ = 0;
  std::uint32_t acks_since_save_ = 0;
  Clock::TimePoint last_save_;
};

}  // namespace sourced::detail
