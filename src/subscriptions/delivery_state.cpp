#include "subscriptions/delivery_state.hpp"

#include <algorithm>
#include <stdexcept>

namespace sourced::detail {

DeliveryState::DeliveryState(DeliveryLimits limits, std::uint64_t checkpoint, Clock::TimePoint now)
    : limits_(limits), scanned_(checkpoint), saved_checkpoint_(checkpoint), last_save_(now) {
  limits_.max_in_flight = std::max<std::uint32_t>(limits_.max_in_flight, 1);
  limits_.max_attempts = std::max<std::uint32_t>(limits_.max_attempts, 1);
}

DeliveryStep DeliveryState::step(Clock::TimePoint now) const {
  DeliveryStep s;
  if (!retries_.empty()) {
    const auto& [due, what] = *retries_.begin();
    if (due <= now) return {DeliveryStep::Kind::retry, what.first, due};
    s.wake_at = due;
  }
  if (in_flight() >= limits_.max_in_flight) {
    s.kind = DeliveryStep::Kind::wait;
    return s;
  }
  // Replays go before new events: someone asked for them, and they are few.
  if (!replay_queue_.empty()) {
    s.kind = DeliveryStep::Kind::replay;
    s.key = *replay_queue_.begin();
    return s;
  }
  s.kind = DeliveryStep::Kind::pull;
  return s;
}

std::uint32_t DeliveryState::delivered(std::uint64_t key) {
  if (key <= scanned_) throw std::logic_error("DeliveryState: a new event at or below what was scanned");
  if (in_flight() >= limits_.max_in_flight) throw std::logic_error("DeliveryState: delivered past max_in_flight");
  scanned_ = key;
  main_[key] = Entry{1, true, {}};
  outstanding_.push_back({key, false});
  return 1;
}

void DeliveryState::scanned(std::uint64_t key) { scanned_ = std::max(scanned_, key); }

std::uint32_t DeliveryState::redeliver(std::uint64_t key) {
  for (auto it = retries_.begin(); it != retries_.end(); ++it) {
    if (it->second.first != key) continue;
    bool replay = it->second.second;
    retries_.erase(it);
    Entry& e = table(replay).at(key);
    e.outstanding = true;
    ++e.attempts;
    outstanding_.push_back({key, replay});
    return e.attempts;
  }
  throw std::logic_error("DeliveryState: redeliver of an event not waiting for a retry");
}

bool DeliveryState::replay_requested(std::uint64_t key) {
  if (key > checkpoint() || replays_.count(key) || replay_queue_.count(key)) return false;
  if (std::find(unparked_.begin(), unparked_.end(), key) != unparked_.end()) return false;
  for (const auto& p : parked_)
    if (p.key == key) return false;
  replay_queue_.insert(key);
  return true;
}

std::uint32_t DeliveryState::replay(std::uint64_t key) {
  if (!replay_queue_.erase(key)) throw std::logic_error("DeliveryState: replay of an event not requested");
  if (in_flight() >= limits_.max_in_flight) throw std::logic_error("DeliveryState: replay past max_in_flight");
  replays_[key] = Entry{1, true, {}};
  outstanding_.push_back({key, true});
  return 1;
}

void DeliveryState::replay_gone(std::uint64_t key) {
  if (replay_queue_.erase(key)) unparked_.push_back(key);
}

bool DeliveryState::outstanding(std::uint64_t key) const {
  return std::any_of(outstanding_.begin(), outstanding_.end(), [&](const Delivery& d) { return d.key == key; });
}

void DeliveryState::settle(const Delivery& d) {
  table(d.replay).erase(d.key);
  if (d.replay) unparked_.push_back(d.key);
}

std::vector<std::uint64_t> DeliveryState::ack(std::uint64_t key) {
  auto it = std::find_if(outstanding_.begin(), outstanding_.end(), [&](const Delivery& d) { return d.key == key; });
  if (it == outstanding_.end()) return {};
  std::size_t n = static_cast<std::size_t>(it - outstanding_.begin()) + 1;
  std::vector<std::uint64_t> settled;
  settled.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    settled.push_back(outstanding_.front().key);
    settle(outstanding_.front());
    outstanding_.pop_front();
  }
  acks_since_save_ += static_cast<std::uint32_t>(n);
  return settled;
}

std::chrono::milliseconds DeliveryState::backoff(std::uint32_t attempts) const {
  auto d = limits_.retry_backoff;
  for (std::uint32_t i = 1; i < attempts && d < limits_.retry_backoff_max; ++i) d *= 2;
  return std::min(d, limits_.retry_backoff_max);
}

DeliveryState::NackOutcome DeliveryState::nack(std::uint64_t key, std::string error, Clock::TimePoint now,
                                               NackAction action) {
  auto it = std::find_if(outstanding_.begin(), outstanding_.end(), [&](const Delivery& d) { return d.key == key; });
  if (it == outstanding_.end()) return NackOutcome::unknown;
  Delivery d = *it;
  outstanding_.erase(it);
  Entry& e = table(d.replay).at(key);
  last_error_ = error;
  if (action == NackAction::skip) {
    // Counts as an ack for saving: the checkpoint may pass it now.
    settle(d);
    ++acks_since_save_;
    return NackOutcome::skipped;
  }
  if (action == NackAction::park || e.attempts >= limits_.max_attempts) {
    parked_.push_back({key, e.attempts, std::move(error)});
    table(d.replay).erase(key);
    return NackOutcome::parked;
  }
  e.outstanding = false;
  e.retry_at = now + backoff(e.attempts);
  retries_.insert({e.retry_at, {key, d.replay}});
  return NackOutcome::retry;
}

std::uint64_t DeliveryState::checkpoint() const { return main_.empty() ? scanned_ : main_.begin()->first - 1; }

bool DeliveryState::unsaved() const {
  std::uint64_t cp = checkpoint();
  if (cp != saved_checkpoint_ || !unparked_.empty() || last_error_ || in_flight() != saved_in_flight_) return true;
  return std::any_of(parked_.begin(), parked_.end(), [&](const ParkRecord& p) { return p.key <= cp; });
}

Clock::TimePoint DeliveryState::save_at() const {
  if (!unsaved()) return Clock::TimePoint::max();
  return last_save_ + limits_.checkpoint_after;
}

bool DeliveryState::save_due(Clock::TimePoint now) const {
  if (acks_since_save_ >= limits_.checkpoint_after_acks) return true;
  return save_at() <= now;
}

ProgressSnapshot DeliveryState::progress() const {
  ProgressSnapshot s;
  s.checkpoint = checkpoint();
  for (const auto& p : parked_)
    if (p.key <= s.checkpoint) s.newly_parked.push_back(p);
  s.unparked = unparked_;
  s.in_flight = in_flight();
  s.last_error = last_error_;
  return s;
}

void DeliveryState::saved(const ProgressSnapshot& snapshot, Clock::TimePoint now) {
  saved_checkpoint_ = std::max(saved_checkpoint_, snapshot.checkpoint);
  saved_in_flight_ = snapshot.in_flight;
  std::erase_if(parked_, [&](const ParkRecord& p) {
    return std::find(snapshot.newly_parked.begin(), snapshot.newly_parked.end(), p) != snapshot.newly_parked.end();
  });
  std::erase_if(unparked_, [&](std::uint64_t k) {
    return std::find(snapshot.unparked.begin(), snapshot.unparked.end(), k) != snapshot.unparked.end();
  });
  if (snapshot.last_error && last_error_ == snapshot.last_error) last_error_.reset();
  acks_since_save_ = 0;
  last_save_ = now;
}

}  // namespace sourced::detail
