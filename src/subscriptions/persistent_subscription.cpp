#include "sourced/persistent_subscription.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <unordered_map>

#include "sourced/error.hpp"
#include "subscriptions/delivery_state.hpp"

namespace sourced {
namespace {

SubscriptionRegistry& registry_of(EventStore& store) { return store.subscriptions(); }

// How long a runner waits for a delivery in one call; its stop request ends the
// wait at once.
constexpr std::chrono::milliseconds kRunnerWait(60'000);
// How often next() asks whether the lease is still held (a round trip on PostgreSQL): an upper bound on
// how long a consumer that lost its lease goes on delivering beside the new holder.
constexpr std::chrono::milliseconds kLeaseCheck(1000);
// Replay requests taken from the store at once (they count against
// max_in_flight as they are delivered).
constexpr std::size_t kReplayBatch = 1000;

std::chrono::milliseconds until(Clock::TimePoint from, Clock::TimePoint to) {
  if (to <= from) return std::chrono::milliseconds(0);
  if (to == Clock::TimePoint::max()) return std::chrono::milliseconds::max();
  return std::chrono::ceil<std::chrono::milliseconds>(to - from);
}

}  // namespace

// The I/O around detail::DeliveryState: the lease, the source (a catch-up
// subscription from the checkpoint), the events not yet settled, saves, and
// replay requests read from the registry.
class PersistentSubscription::Impl {
 public:
  Impl(EventStore& store, std::string_view name, PersistentConsumerOptions options, std::stop_token stop)
      : store_(store),
        registry_(registry_of(store)),
        name_(name),
        options_(options),
        clock_(options.clock ? *options.clock : Clock::steady()) {
    lease_ = registry_.acquire(name_, options_.wait_for_lease, options_.lease_timeout, stop);
    lease_check_at_ = std::chrono::steady_clock::now() + kLeaseCheck;
    auto info = read_info();
    config_ = info->config;
    std::uint32_t max_in_flight = config_.max_in_flight;
    if (options_.max_in_flight > 0) max_in_flight = std::min(max_in_flight, options_.max_in_flight);
    detail::DeliveryLimits limits{.max_in_flight = max_in_flight,
                                  .max_attempts = config_.max_attempts,
                                  .retry_backoff = options_.retry_backoff,
                                  .retry_backoff_max = options_.retry_backoff_max,
                                  .checkpoint_after_acks = options_.checkpoint_after_acks,
                                  .checkpoint_after = options_.checkpoint_after};
    auto now = clock_.now();
    state_.emplace(limits, info->checkpoint, now);
    if (config_.stream.empty()) {
      source_.emplace(subscribe_to_all(store_, {.start = SubscriptionStart::after(Position(info->checkpoint)),
                                                .filter = config_.filter,
                                                .checkpoint_interval = options_.checkpoint_interval}));
    } else {
      SubscriptionOptions o;
      o.start = SubscriptionStart::after(StreamVersion(info->checkpoint));
      source_.emplace(subscribe_to_stream(store_, config_.stream, o));
    }
    take_replay_requests(*info, now);
  }

  std::optional<PersistentDelivery> next(std::chrono::milliseconds timeout, const std::stop_token& stop) {
    using Kind = detail::DeliveryStep::Kind;
    auto deadline = std::chrono::steady_clock::now() + std::min(timeout, std::chrono::milliseconds(kMaxWaitMs));
    for (bool first = true;; first = false) {
      if (stop.stop_requested()) return std::nullopt;
      if (!first && std::chrono::steady_clock::now() >= deadline) return std::nullopt;
      if (std::chrono::steady_clock::now() >= lease_check_at_) {
        check_lease();
        lease_check_at_ = std::chrono::steady_clock::now() + kLeaseCheck;
      }
      auto now = clock_.now();
      if (state_->save_due(now)) save(now, false);
      if (now >= replay_check_at_) check_replays(now);
      auto step = state_->step(now);
      switch (step.kind) {
        case Kind::retry: {
          std::uint32_t attempt = state_->redeliver(step.key);
          const Held& h = held_.at(step.key);
          return PersistentDelivery{h.event, step.key, attempt, h.replay};
        }
        case Kind::replay:
          if (auto d = replay(step.key)) return d;
          continue;
        case Kind::wait: {
          // Only this thread's acks or a retry coming due can change anything.
          auto wake = std::min({step.wake_at, state_->save_at(), replay_check_at_});
          auto left = std::chrono::duration_cast<std::chrono::milliseconds>(std::min(deadline, lease_check_at_) -
                                                                            std::chrono::steady_clock::now());
          sleep(std::min(until(now, wake), std::max(left, std::chrono::milliseconds(0))), stop);
          continue;
        }
        case Kind::pull:
          break;
      }
      auto wake = std::min({step.wake_at, state_->save_at(), replay_check_at_});
      // Waits end at the next lease check too: an event arriving after a long wait is not delivered by a
      // consumer that lost its lease meanwhile.
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(std::min(deadline, lease_check_at_) -
                                                                        std::chrono::steady_clock::now());
      auto m = source_->next(std::min(until(now, wake), std::max(left, std::chrono::milliseconds(0))), stop);
      if (!m) continue;
      if (m->kind != SubscriptionMessage::Kind::event) {
        state_->scanned(m->checkpoint);
        continue;
      }
      std::uint64_t key = m->checkpoint;  // the event's position or version
      auto event = std::make_shared<const RecordedEvent>(*m->event);
      held_[key] = Held{event, false};
      std::uint32_t attempt = state_->delivered(key);
      return PersistentDelivery{std::move(event), key, attempt, false};
    }
  }

  void ack(std::uint64_t key) {
    for (auto k : state_->ack(key)) held_.erase(k);
  }

  void nack(std::uint64_t key, std::string_view error, NackAction action) {
    using A = detail::DeliveryState::NackAction;
    A a = action == NackAction::park ? A::park : action == NackAction::skip ? A::skip : A::retry;
    // A parked event stays held until the save that records it; a skipped one is settled now.
    if (state_->nack(key, std::string(error), clock_.now(), a) == detail::DeliveryState::NackOutcome::skipped) {
      held_.erase(key);
    }
  }

  void save(Clock::TimePoint now, bool closing) {
    // A consumer that lost its lease must not write progress over the new holder's.
    check_lease();
    auto p = state_->progress();
    SubscriptionProgress progress;
    progress.checkpoint = p.checkpoint;
    progress.unparked = p.unparked;
    progress.in_flight = closing ? 0 : p.in_flight;
    progress.last_error = p.last_error;
    progress.subscription_id = lease_->subscription_id();
    auto parked_at = sourced::now();
    for (const auto& r : p.newly_parked) {
      const RecordedEvent& e = *held_.at(r.key).event;
      progress.newly_parked.push_back(ParkedEvent{.key = r.key,
                                                  .position = e.position,
                                                  .stream = e.stream,
                                                  .version = e.version,
                                                  .event_id = e.id,
                                                  .type = e.type,
                                                  .attempts = r.attempts,
                                                  .error = r.error,
                                                  .parked_at = parked_at});
    }
    registry_.save_progress(name_, progress);
    state_->saved(p, now);
    for (const auto& r : p.newly_parked) held_.erase(r.key);
  }

  void save_now() { save(clock_.now(), false); }

  void close() {
    if (!lease_) return;
    save(clock_.now(), true);
    lease_.reset();
  }

  void abandon() { lease_.reset(); }
  bool open() const { return lease_ != nullptr; }

  const std::string& name() const { return name_; }
  std::uint64_t checkpoint() const { return state_->checkpoint(); }
  std::uint64_t in_flight() const { return state_->in_flight(); }

 private:
  static constexpr std::int64_t kMaxWaitMs = 1'000'000'000'000;

  struct Held {
    std::shared_ptr<const RecordedEvent> event;
    bool replay = false;
  };

  // Throws SubscriptionLeaseLost, letting go of the lease (the consumer is closed), when it is gone.
  void check_lease() {
    if (lease_->held()) return;
    lease_.reset();
    throw SubscriptionLeaseLost(name_);
  }

  // The subscription the lease holds: not a successor of the same name (deleted and created again).
  std::optional<PersistentSubscriptionInfo> read_info() {
    auto info = registry_.get(name_);
    if (!info || info->id != lease_->subscription_id()) throw SubscriptionNotFound(name_);
    return info;
  }

  void check_replays(Clock::TimePoint now) { take_replay_requests(*read_info(), now); }

  void take_replay_requests(const PersistentSubscriptionInfo& info, Clock::TimePoint now) {
    replay_check_at_ = now + options_.replay_check_interval;
    if (info.parked == 0 || replay_requests_.size() >= kReplayBatch) return;
    std::uint64_t after = 0;
    for (;;) {
      auto page = registry_.parked(name_, after, kReplayBatch);
      for (auto& p : page) {
        if (p.replay_requested && state_->replay_requested(p.key)) replay_requests_[p.key] = p.position;
      }
      if (page.size() < kReplayBatch || replay_requests_.size() >= kReplayBatch) break;
      after = page.back().key;
    }
  }

  std::optional<PersistentDelivery> replay(std::uint64_t key) {
    // The request is forgotten only once DeliveryState has taken it: a read that throws leaves both for
    // the next call.
    Position position = replay_requests_.at(key);
    ReadAllOptions o;
    o.from = position;
    o.max_count = 1;
    auto reader = store_.read_all(o);
    const RecordedEvent* e = reader.try_next();
    if (!e || e->position != position) {
      state_->replay_gone(key);  // nothing left to deliver: unparked at the next save
      replay_requests_.erase(key);
      return std::nullopt;
    }
    auto event = std::make_shared<const RecordedEvent>(*e);
    held_[key] = Held{event, true};
    std::uint32_t attempt = state_->replay(key);
    replay_requests_.erase(key);
    return PersistentDelivery{std::move(event), key, attempt, true};
  }

  void sleep(std::chrono::milliseconds d, const std::stop_token& stop) {
    if (d.count() <= 0) return;
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop, d, [] { return false; });
  }

  EventStore& store_;
  SubscriptionRegistry& registry_;
  std::string name_;
  PersistentConsumerOptions options_;
  Clock& clock_;
  std::unique_ptr<SubscriptionLease> lease_;
  PersistentSubscriptionConfig config_;
  std::optional<detail::DeliveryState> state_;
  std::optional<CatchUpSubscription> source_;
  std::unordered_map<std::uint64_t, Held> held_;  // unsettled events, and parked ones not yet saved
  std::map<std::uint64_t, Position> replay_requests_;
  Clock::TimePoint replay_check_at_;
  std::chrono::steady_clock::time_point lease_check_at_;
};

PersistentSubscription::PersistentSubscription(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PersistentSubscription::PersistentSubscription(PersistentSubscription&&) noexcept = default;
PersistentSubscription& PersistentSubscription::operator=(PersistentSubscription&& other) noexcept {
  if (this != &other) {
    if (impl_) {
      try {
        impl_->close();
      } catch (...) {
      }
    }
    impl_ = std::move(other.impl_);
  }
  return *this;
}
PersistentSubscription::~PersistentSubscription() {
  if (!impl_) return;
  try {
    impl_->close();
  } catch (...) {
    impl_->abandon();  // what was not saved is delivered again to the next
                       // consumer
  }
}

std::optional<PersistentDelivery> PersistentSubscription::next(std::chrono::milliseconds timeout,
                                                               std::stop_token stop) {
  if (!impl_->open()) throw InvalidArgument("persistent subscription " + impl_->name() + " is closed");
  return impl_->next(timeout, stop);
}
void PersistentSubscription::ack(std::uint64_t key) { impl_->ack(key); }
void PersistentSubscription::nack(std::uint64_t key, std::string_view error) {
  impl_->nack(key, error, NackAction::retry);
}
void PersistentSubscription::nack(std::uint64_t key, std::string_view error, NackAction action) {
  impl_->nack(key, error, action);
}
void PersistentSubscription::save() {
  if (impl_->open()) impl_->save_now();
}
void PersistentSubscription::close() { impl_->close(); }
const std::string& PersistentSubscription::name() const { return impl_->name(); }
std::uint64_t PersistentSubscription::checkpoint() const { return impl_->checkpoint(); }
std::uint64_t PersistentSubscription::in_flight() const { return impl_->in_flight(); }

PersistentSubscription open_persistent_subscription(EventStore& store, std::string_view name,
                                                    PersistentConsumerOptions options, std::stop_token stop) {
  return PersistentSubscription(std::make_unique<PersistentSubscription::Impl>(store, name, options, stop));
}

void create_persistent_subscription(EventStore& store, std::string_view name,
                                    const PersistentSubscriptionSettings& settings) {
  PersistentSubscriptionConfig config{.name = std::string(name),
                                      .stream = settings.stream,
                                      .filter = settings.filter,
                                      .start_after = settings.start.key(),
                                      .max_in_flight = settings.max_in_flight,
                                      .max_attempts = settings.max_attempts};
  if (!settings.stream.empty()) {
    if (auto problem = stream_id_problem(settings.stream)) throw InvalidArgument("invalid stream id: " + *problem);
    if (settings.filter) throw InvalidArgument("a filter applies to subscriptions to $all only");
  } else if (settings.filter) {
    store.read_all({.from = std::nullopt, .max_count = 0, .filter = settings.filter});  // checks it
  }
  switch (settings.start.kind()) {
    case SubscriptionStart::Kind::origin:
      config.start_after = 0;
      break;
    case SubscriptionStart::Kind::after:
      break;
    case SubscriptionStart::Kind::end:
      if (settings.stream.empty()) {
        config.start_after = store.head_position().value();
      } else {
        auto info = store.stream_info(settings.stream);
        config.start_after = info ? info->last_version.value() : 0;
      }
      break;
  }
  registry_of(store).create(config);
}

bool delete_persistent_subscription(EventStore& store, std::string_view name) {
  return registry_of(store).remove(name);
}

std::optional<PersistentSubscriptionInfo> persistent_subscription_info(EventStore& store, std::string_view name) {
  return registry_of(store).get(name);
}

void update_persistent_subscription(EventStore& store, std::string_view name, std::uint32_t max_in_flight,
                                    std::uint32_t max_attempts) {
  registry_of(store).update_limits(name, max_in_flight, max_attempts);
}

std::uint64_t replay_parked_events(EventStore& store, std::string_view name) {
  return registry_of(store).request_replay(name);
}

struct PersistentSubscriptionRunner::State {
  std::atomic<bool> running{true};
  mutable std::mutex mu;
  std::exception_ptr error;  // guarded by mu
};

PersistentSubscriptionRunner::PersistentSubscriptionRunner(PersistentSubscription subscription, Handler handler)
    : state_(std::make_shared<State>()) {
  thread_ = std::jthread(
      [state = state_, sub = std::move(subscription), handler = std::move(handler)](std::stop_token stop) mutable {
        try {
          while (!stop.stop_requested()) {
            auto d = sub.next(kRunnerWait, stop);
            if (!d) continue;
            std::optional<std::string> failure;
            try {
              handler(*d);
            } catch (const std::exception& e) {
              failure = e.what();
            } catch (...) {
              failure = "unknown exception";
            }
            if (failure) {
              sub.nack(d->key, *failure);
            } else {
              sub.ack(d->key);
            }
          }
          sub.close();
        } catch (...) {
          std::lock_guard lock(state->mu);
          state->error = std::current_exception();
        }
        state->running = false;
      });
}

PersistentSubscriptionRunner::~PersistentSubscriptionRunner() { stop(); }

void PersistentSubscriptionRunner::stop() {
  thread_.request_stop();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

bool PersistentSubscriptionRunner::running() const { return state_->running; }

std::exception_ptr PersistentSubscriptionRunner::error() const {
  std::lock_guard lock(state_->mu);
  return state_->error;
}

}  // namespace sourced
