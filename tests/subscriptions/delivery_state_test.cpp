// The persistent subscription's decision logic (detail::DeliveryState) against a reference model: random
// deliveries, cumulative acks, nacks, clock moves, saves, replay requests and crashes (the state thrown
// away, restarted from what was saved), with many seeds. The model is written from the rules, not from
// the code: a plain table of every event's deliveries and fate.

#include "subscriptions/delivery_state.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>

#include <gtest/gtest.h>

namespace sourced::detail {
namespace {

using namespace std::chrono_literals;
using TimePoint = Clock::TimePoint;
using Kind = DeliveryStep::Kind;
using NackAction = DeliveryState::NackAction;

// What the store keeps: the registry as save_progress() leaves it.
struct Registry {
  std::uint64_t checkpoint = 0;
  struct Parked {
    std::uint32_t attempts;
    bool replay_requested;
  };
  std::map<std::uint64_t, Parked> parked;
};

struct ModelEvent {
  std::uint32_t deliveries = 0;
  bool outstanding = false;
  std::optional<TimePoint> retry_due;
  bool replay = false;
};

class ModelRun {
 public:
  explicit ModelRun(std::uint32_t seed) : rng_(seed) {
    limits_.max_in_flight = pick(1, 6);
    limits_.max_attempts = pick(1, 4);
    limits_.retry_backoff = std::chrono::milliseconds(pick(1, 50));
    limits_.retry_backoff_max = limits_.retry_backoff * pick(1, 8);
    limits_.checkpoint_after_acks = pick(1, 20);
    limits_.checkpoint_after = std::chrono::milliseconds(pick(1, 500));
    last_key_ = pick(20, 300);
    for (std::uint64_t k = 1; k <= last_key_; ++k)
      if (pick(0, 9) < 7) events_.insert(k);  // the rest do not pass the subscription's filter
    nack_percent_ = pick(0, 60);
    restart();
  }

  void run(int operations) {
    for (int i = 0; i < operations && !::testing::Test::HasFatalFailure(); ++i) {
      int op = pick(0, 99);
      if (op < 40) {
        do_step();
      } else if (op < 60) {
        do_ack();
      } else if (op < 60 + nack_percent_ / 3) {
        do_nack();
      } else if (op < 85) {
        now_ += std::chrono::milliseconds(pick(0, 100));
      } else if (op < 92) {
        do_save();
      } else if (op < 96) {
        do_request_replay();
      } else if (op < 97) {
        restart();  // a crash: everything not saved is lost
      } else {
        do_ack_unknown();
      }
      check();
    }
    drain();
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  void restart() {
    state_.emplace(limits_, registry_.checkpoint, now_);
    model_.clear();
    order_.clear();
    replay_queue_.clear();
    pending_parked_.clear();
    pending_unparked_.clear();
    source_ = registry_.checkpoint;
    poll_replays();  // what a consumer does when it opens
  }

  std::uint64_t in_flight() const { return model_.size(); }

  std::uint64_t expected_checkpoint() const {
    for (const auto& [k, e] : model_)
      if (!e.replay) return k - 1;
    return source_;
  }

  std::chrono::milliseconds backoff(std::uint32_t deliveries) const {
    auto d = limits_.retry_backoff;
    for (std::uint32_t i = 1; i < deliveries; ++i) d = std::min(d * 2, limits_.retry_backoff_max);
    return std::min(d, limits_.retry_backoff_max);
  }

  void deliver(std::uint64_t key, std::uint32_t attempt) {
    auto& e = model_.at(key);
    ++e.deliveries;
    e.outstanding = true;
    e.retry_due.reset();
    order_.push_back(key);
    ASSERT_EQ(attempt, e.deliveries) << "attempt number of " << key;
    ASSERT_LE(e.deliveries, limits_.max_attempts) << key << " delivered more than max_attempts times";
  }

  void do_step() {
    auto s = state_->step(now_);
    // The reference decision: a due retry (earliest first), else wait at the limit, else a replay,
    // else a new event.
    std::optional<std::pair<TimePoint, std::uint64_t>> due;
    for (const auto& [k, e] : model_)
      if (e.retry_due && *e.retry_due <= now_ && (!due || std::make_pair(*e.retry_due, k) < *due))
        due = std::make_pair(*e.retry_due, k);
    if (due) {
      ASSERT_EQ(s.kind, Kind::retry);
      ASSERT_EQ(s.key, due->second);
      deliver(s.key, state_->redeliver(s.key));
      return;
    }
    if (in_flight() >= limits_.max_in_flight) {
      ASSERT_EQ(s.kind, Kind::wait) << "in flight " << in_flight();
      return;
    }
    if (!replay_queue_.empty()) {
      ASSERT_EQ(s.kind, Kind::replay);
      ASSERT_EQ(s.key, *replay_queue_.begin());
      replay_queue_.erase(replay_queue_.begin());
      model_[s.key] = ModelEvent{.replay = true};
      deliver(s.key, state_->replay(s.key));
      return;
    }
    ASSERT_EQ(s.kind, Kind::pull);
    if (source_ == last_key_) return;  // the source has nothing yet
    ++source_;
    if (events_.count(source_)) {
      ASSERT_FALSE(registry_.parked.count(source_)) << "a parked event came again from the source";
      model_[source_] = ModelEvent{};
      deliver(source_, state_->delivered(source_));
    } else {
      state_->scanned(source_);
    }
  }

  void settle(std::uint64_t key) {
    auto& e = model_.at(key);
    if (e.replay) pending_unparked_.insert(key);
    acked_.insert(key);
    model_.erase(key);
  }

  void do_ack() {
    if (order_.empty()) return;
    std::size_t i = static_cast<std::size_t>(pick(0, static_cast<int>(order_.size()) - 1));
    std::uint64_t key = order_[i];
    ASSERT_EQ(state_->ack(key).size(), i + 1) << "a cumulative ack of " << key << " settles every delivery before it";
    for (std::size_t j = 0; j <= i; ++j) settle(order_[j]);
    order_.erase(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(i) + 1);
  }

  void do_ack_unknown() {
    std::uint64_t key = static_cast<std::uint64_t>(pick(0, static_cast<int>(last_key_) + 5));
    if (std::find(order_.begin(), order_.end(), key) != order_.end()) return;
    ASSERT_TRUE(state_->ack(key).empty()) << "ack of " << key << ", which is not outstanding";
    ASSERT_EQ(state_->nack(key, "x", now_), DeliveryState::NackOutcome::unknown);
  }

  void do_nack() {
    if (order_.empty()) return;
    std::size_t i = static_cast<std::size_t>(pick(0, static_cast<int>(order_.size()) - 1));
    std::uint64_t key = order_[i];
    order_.erase(order_.begin() + static_cast<std::ptrdiff_t>(i));
    // Mostly retries, now and then a park or a skip decided by the consumer (EventStoreDB's nack actions).
    int a = pick(0, 9);
    auto action = a < 7 ? NackAction::retry : a < 9 ? NackAction::park : NackAction::skip;
    auto outcome = state_->nack(key, "failed " + std::to_string(key), now_, action);
    auto& e = model_.at(key);
    if (action == NackAction::skip) {
      ASSERT_EQ(outcome, DeliveryState::NackOutcome::skipped) << key;
      settle(key);
    } else if (action == NackAction::park || e.deliveries >= limits_.max_attempts) {
      ASSERT_EQ(outcome, DeliveryState::NackOutcome::parked) << key << " after " << e.deliveries << " deliveries";
      pending_parked_[key] = e.deliveries;
      model_.erase(key);
    } else {
      ASSERT_EQ(outcome, DeliveryState::NackOutcome::retry) << key << " after " << e.deliveries << " deliveries";
      e.outstanding = false;
      e.retry_due = now_ + backoff(e.deliveries);
    }
  }

  void do_save() {
    auto s = state_->progress();
    ASSERT_EQ(s.checkpoint, expected_checkpoint());
    ASSERT_GE(s.checkpoint, registry_.checkpoint) << "the checkpoint moved back";
    ASSERT_EQ(s.in_flight, in_flight());
    for (const auto& p : s.newly_parked) {
      ASSERT_LE(p.key, s.checkpoint) << "a parked event saved before the checkpoint passes it";
      ASSERT_TRUE(pending_parked_.count(p.key)) << p.key << " was not parked";
      ASSERT_EQ(p.attempts, pending_parked_.at(p.key)) << "parked with the deliveries it had";
      pending_parked_.erase(p.key);
    }
    for (const auto& [k, attempts] : pending_parked_)
      ASSERT_GT(k, s.checkpoint) << "parked event " << k << " left out of a save that passes it";
    ASSERT_EQ(std::set<std::uint64_t>(s.unparked.begin(), s.unparked.end()), pending_unparked_);
    // What the engine does with it, atomically.
    registry_.checkpoint = std::max(registry_.checkpoint, s.checkpoint);
    for (const auto& p : s.newly_parked) registry_.parked[p.key] = {p.attempts, false};
    for (auto k : s.unparked) registry_.parked.erase(k);
    pending_unparked_.clear();
    state_->saved(s, now_);
    ASSERT_FALSE(state_->save_due(now_));
    check_nothing_lost();
  }

  void do_request_replay() {
    for (auto& [k, p] : registry_.parked) p.replay_requested = true;
    poll_replays();
  }

  // What a consumer does now and then: take the replay requests from the registry.
  void poll_replays() {
    for (const auto& [k, p] : registry_.parked) {
      if (!p.replay_requested) continue;
      bool want =
          !model_.count(k) && !replay_queue_.count(k) && !pending_unparked_.count(k) && !pending_parked_.count(k);
      ASSERT_EQ(state_->replay_requested(k), want) << "replay request of " << k;
      if (want) replay_queue_.insert(k);
    }
  }

  // Every event at or below the saved checkpoint was acknowledged (in this run or before a crash) or is
  // parked; none was skipped.
  void check_nothing_lost() {
    for (auto k : events_) {
      if (k > registry_.checkpoint) break;
      ASSERT_TRUE(acked_.count(k) || registry_.parked.count(k)) << "event " << k << " lost";
    }
  }

  void check() {
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_LE(state_->in_flight(), limits_.max_in_flight);
    ASSERT_EQ(state_->in_flight(), in_flight());
    ASSERT_EQ(state_->checkpoint(), expected_checkpoint());
    for (const auto& [k, e] : model_)
      if (!e.replay) ASSERT_LT(state_->checkpoint(), k) << "the checkpoint passed unsettled event " << k;
    for (auto k : order_) ASSERT_TRUE(state_->outstanding(k));
  }

  // The consumer handles everything from now on (no more failures): every event ends acknowledged or parked.
  void drain() {
    for (int guard = 0; guard < 100000 && !::testing::Test::HasFatalFailure(); ++guard) {
      if (!order_.empty()) {
        std::uint64_t key = order_.back();
        ASSERT_EQ(state_->ack(key).size(), order_.size());
        for (auto k : order_) settle(k);
        order_.clear();
      }
      auto s = state_->step(now_);
      if (s.kind == Kind::pull && source_ == last_key_ && in_flight() == 0 && replay_queue_.empty()) break;
      if (s.kind == Kind::wait || (s.kind == Kind::pull && source_ == last_key_)) now_ += 1s;
      do_step();
      check();
    }
    do_save();
    ASSERT_EQ(registry_.checkpoint, last_key_);
    for (auto k : events_) ASSERT_TRUE(acked_.count(k) || registry_.parked.count(k)) << "event " << k;
    for (const auto& [k, p] : registry_.parked) ASSERT_LE(p.attempts, limits_.max_attempts);
  }

  std::mt19937 rng_;
  DeliveryLimits limits_;
  std::uint64_t last_key_ = 0;
  std::set<std::uint64_t> events_;
  int nack_percent_ = 0;
  TimePoint now_ = TimePoint(1h);
  std::optional<DeliveryState> state_;
  Registry registry_;
  std::uint64_t source_ = 0;                   // the source delivered or filtered everything through here
  std::map<std::uint64_t, ModelEvent> model_;  // unsettled
  std::deque<std::uint64_t> order_;            // outstanding deliveries, in delivery order
  std::set<std::uint64_t> replay_queue_;
  std::map<std::uint64_t, std::uint32_t> pending_parked_;
  std::set<std::uint64_t> pending_unparked_;
  std::set<std::uint64_t> acked_;
};

TEST(DeliveryState, MatchesTheReferenceModelOverManyRandomRuns) {
  for (std::uint32_t seed = 1; seed <= 2000; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    ModelRun(seed).run(600);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(DeliveryState, BackOffDoublesUpToItsCapAndRetriesGoFirst) {
  DeliveryLimits limits{.max_in_flight = 10, .max_attempts = 5, .retry_backoff = 100ms, .retry_backoff_max = 300ms};
  TimePoint t0(1h);
  DeliveryState s(limits, 0, t0);
  s.delivered(1);
  s.delivered(2);
  EXPECT_EQ(s.nack(1, "boom", t0), DeliveryState::NackOutcome::retry);
  EXPECT_EQ(s.step(t0).kind, Kind::pull) << "new events go on during the back-off";
  EXPECT_EQ(s.step(t0).wake_at, t0 + 100ms);
  auto at = t0 + 100ms;
  EXPECT_EQ(s.step(at).kind, Kind::retry);
  EXPECT_EQ(s.redeliver(1), 2u);
  s.nack(1, "boom", at);
  EXPECT_EQ(s.step(at + 199ms).kind, Kind::pull);
  EXPECT_EQ(s.step(at + 200ms).kind, Kind::retry);
  EXPECT_EQ(s.redeliver(1), 3u);
  s.nack(1, "boom", at);
  EXPECT_EQ(s.step(at + 300ms).kind, Kind::retry) << "capped at retry_backoff_max";
  EXPECT_EQ(s.checkpoint(), 0u);
  EXPECT_EQ(s.ack(2), std::vector<std::uint64_t>{2});
  EXPECT_EQ(s.checkpoint(), 0u) << "held back by the failed event";
}

TEST(DeliveryState, AParkedEventIsSavedWithTheCheckpointThatPassesIt) {
  DeliveryLimits limits{.max_in_flight = 10, .max_attempts = 1};
  TimePoint t0(1h);
  DeliveryState s(limits, 0, t0);
  s.delivered(1);
  s.delivered(2);
  EXPECT_EQ(s.nack(2, "bad", t0), DeliveryState::NackOutcome::parked);
  auto p = s.progress();
  EXPECT_EQ(p.checkpoint, 0u);
  EXPECT_TRUE(p.newly_parked.empty()) << "1 is still in flight: a crash now redelivers both";
  EXPECT_EQ(p.last_error, "bad");
  s.saved(p, t0);
  s.ack(1);
  p = s.progress();
  EXPECT_EQ(p.checkpoint, 2u);
  ASSERT_EQ(p.newly_parked.size(), 1u);
  EXPECT_EQ(p.newly_parked[0], (ParkRecord{2, 1, "bad"}));
  EXPECT_FALSE(p.last_error) << "reported once";
}

}  // namespace
}  // namespace sourced::detail
