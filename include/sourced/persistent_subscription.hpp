#pragma once
// Persistent subscriptions: named, checkpointed in the store, consumed by one
// consumer at a time across processes, at-least-once. Created once, then opened
// by name by whichever process consumes it:
//
//   sourced::create_persistent_subscription(*store, "mailer",
//       {.filter = EventFilter{.category = "account"}, .max_in_flight = 50,
//       .max_attempts = 5});
//   auto sub = sourced::open_persistent_subscription(*store, "mailer",
//   {.wait_for_lease = true}); while (auto d =
//   sub.next(std::chrono::seconds(1))) {
//     try { send_mail(*d->event); sub.ack(d->key); }
//     catch (const std::exception& e) { sub.nack(d->key, e.what()); }
//   }
//
// or with a handler on its own thread (a handler that returns acknowledges, one
// that throws fails):
//
//   sourced::PersistentSubscriptionRunner runner(std::move(sub), [](const
//   PersistentDelivery& d) {...}); runner.stop();  // returns once the last
//   handler call has finished and progress is saved
//
// Delivery is in key order (positions for `$all`, versions for a stream),
// except that a failed event is delivered again after a back-off ahead of new
// events, and parked events marked for replay come before new events. ack(key)
// is cumulative: it settles that delivery and every one handed out before it.
// At most max_in_flight events are unsettled (delivered or waiting for a
// retry): next() hands out nothing new beyond that until acks come. After
// max_attempts failed deliveries an event is parked (kept in the store with its
// error, see SubscriptionRegistry::parked) and delivery moves on.
//
// Progress (the checkpoint, parked and unparked events, in-flight count, last
// error) is saved to the store every `checkpoint_after_acks` acks or
// `checkpoint_after` (when anything changed), and on close: after a crash, at
// most the events acknowledged since the last save are delivered again.
// docs/subscriptions.md explains the decisions and how they follow
// EventStoreDB/KurrentDB.

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>

#include "sourced/clock.hpp"
#include "sourced/event.hpp"
#include "sourced/store.hpp"
#include "sourced/subscription.hpp"
#include "sourced/subscription_registry.hpp"

namespace sourced {

// What a persistent subscription reads and how, given at creation. A value
// type.
struct PersistentSubscriptionSettings {
  // The stream to read; empty: `$all`.
  std::string stream;
  // `$all` only: the events to deliver (evaluated by the engine).
  std::optional<EventFilter> filter;
  // Where delivery starts; end() is resolved to the head (or the stream's last
  // version) at creation.
  SubscriptionStart start = SubscriptionStart::origin();
  std::uint32_t max_in_flight = 100;
  std::uint32_t max_attempts = 10;
};

// Throws SubscriptionExists, or InvalidArgument for a bad name, stream, filter
// or limits.
void create_persistent_subscription(EventStore& store, std::string_view name,
                                    const PersistentSubscriptionSettings& settings);
// Removes the subscription and its parked events; false when it did not exist.
// A consumer that holds it fails with SubscriptionNotFound at its next save.
bool delete_persistent_subscription(EventStore& store, std::string_view name);
std::optional<PersistentSubscriptionInfo> persistent_subscription_info(EventStore& store, std::string_view name);
// Changes an existing subscription's max_in_flight and max_attempts (EventStoreDB's update; what it reads
// and where it started cannot change). Consumers opened afterwards use them; one holding the lease now
// keeps the old ones until it reopens. Throws SubscriptionNotFound, or InvalidArgument for a limit below 1.
void update_persistent_subscription(EventStore& store, std::string_view name, std::uint32_t max_in_flight,
                                    std::uint32_t max_attempts);
// Marks every parked event for redelivery (by the consumer, before new events);
// returns how many.
std::uint64_t replay_parked_events(EventStore& store, std::string_view name);

// What to do with an event whose delivery failed (EventStoreDB's nack actions).
enum class NackAction {
  retry,  // deliver it again after a back-off; parked after max_attempts deliveries
  park,   // park it now, whatever its attempts (an error retrying cannot cure)
  skip,   // settle it as if acknowledged (this delivery only, not cumulative), keeping the error as last_error
};

// How a consumer behaves; none of it is stored. A value type.
struct PersistentConsumerOptions {
  // When another consumer holds the subscription: wait up to `lease_timeout`
  // for it to let go (or die), or (false) fail at once with SubscriptionLocked
  // naming the holder.
  bool wait_for_lease = false;
  std::chrono::milliseconds lease_timeout{30'000};
  // A lower in-flight limit than the subscription's, for this consumer (0: the subscription's). A
  // consumer that must see events strictly in order (a process manager) sets 1: a failed event then
  // blocks everything after it until it is acked or parked, whatever the subscription was created with.
  std::uint32_t max_in_flight = 0;
  // The wait before the second delivery of a failed event, doubled for each
  // later one up to the cap.
  std::chrono::milliseconds retry_backoff{100};
  std::chrono::milliseconds retry_backoff_max{10'000};
  // Save progress after this many acks, or this long after the last save
  // (EventStoreDB's checkpoint upper bound and checkpoint-after).
  std::uint32_t checkpoint_after_acks = 1000;
  std::chrono::milliseconds checkpoint_after{2000};
  // How often the consumer looks for replay requests (made by any process).
  std::chrono::milliseconds replay_check_interval{2000};
  // Filtered `$all`: a checkpoint notice after this many positions without a
  // match (see SubscriptionOptions).
  std::uint64_t checkpoint_interval = 4096;
  // Decides back-off and save times; must outlive the consumer. nullptr:
  // Clock::steady().
  Clock* clock = nullptr;
};

// One delivery of an event. A value type; `event` stays valid as long as the
// delivery is kept.
struct PersistentDelivery {
  std::shared_ptr<const RecordedEvent> event;
  // What to ack or nack: the event's position (`$all`) or version (a stream).
  std::uint64_t key = 0;
  // 1 for the first delivery, 2 for the first retry, ...
  std::uint32_t attempt = 1;
  // A parked event delivered again after replay_parked_events().
  bool replay = false;
};

// The one consumer of a persistent subscription, holding its lease until closed
// or destroyed. Pull API: one thread at a time calls next(), ack() and nack();
// it may be moved to another thread between calls. No thread of its own. The
// store must outlive it.
class PersistentSubscription {
 public:
  PersistentSubscription(PersistentSubscription&&) noexcept;
  PersistentSubscription& operator=(PersistentSubscription&&) noexcept;
  // Closes (saving progress, errors ignored: the events since the last save
  // will be redelivered).
  ~PersistentSubscription();

  // The next delivery, waiting up to `timeout`; nullopt when none came in time,
  // `stop` was requested, or the in-flight limit is reached and no retry came
  // due. Saves progress when due. Throws what the store throws, and
  // SubscriptionNotFound when the subscription was deleted; the consumer may go
  // on after an error.
  std::optional<PersistentDelivery> next(std::chrono::milliseconds timeout, std::stop_token stop = {});
  // Settles the delivery of `key` and every delivery handed out before it that
  // is not failed. An unknown or already settled key is ignored. Memory only:
  // saved later.
  void ack(std::uint64_t key);
  // The delivery of `key` failed: retried after a back-off, or parked with
  // `error` after max_attempts deliveries. An unknown key is ignored.
  void nack(std::uint64_t key, std::string_view error);
  // The delivery of `key` failed: what `action` says. Each action records `error` as the subscription's
  // last_error (saved with the next progress). An unknown key is ignored.
  void nack(std::uint64_t key, std::string_view error, NackAction action);
  // Saves progress now.
  void save();
  // Saves progress (reporting nothing in flight) and releases the lease.
  // Deliveries not acknowledged are delivered again to the next consumer.
  // Idempotent; the subscription cannot be used after it.
  void close();

  const std::string& name() const;
  // Every event at or before it is acknowledged or parked (saved or not yet).
  std::uint64_t checkpoint() const;
  // Events delivered or waiting for a retry, not yet settled.
  std::uint64_t in_flight() const;

  class Impl;

 private:
  friend PersistentSubscription open_persistent_subscription(EventStore&, std::string_view, PersistentConsumerOptions,
                                                             std::stop_token);
  explicit PersistentSubscription(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Opens the subscription `name` as its consumer: takes its lease (see
// PersistentConsumerOptions), then resumes after its stored checkpoint. Throws
// SubscriptionNotFound, SubscriptionLocked (naming the holder).
PersistentSubscription open_persistent_subscription(EventStore& store, std::string_view name,
                                                    PersistentConsumerOptions options = {}, std::stop_token stop = {});

// Drives a persistent subscription on its own thread: calls `handler` with each
// delivery, acks it when the handler returns and nacks it (with the exception's
// what()) when it throws. A store error stops the runner and is kept (error()).
// stop() (or the destructor) returns only once the thread has ended: no handler
// call runs or will run after it, progress is saved and the lease released.
// Calling stop() from inside the handler only asks the runner to stop after the
// handler returns. Thread-safe: stop(), running() and error() may be called
// from any thread. The store must outlive the runner.
class PersistentSubscriptionRunner {
 public:
  using Handler = std::function<void(const PersistentDelivery&)>;

  PersistentSubscriptionRunner(PersistentSubscription subscription, Handler handler);
  PersistentSubscriptionRunner(const PersistentSubscriptionRunner&) = delete;
  PersistentSubscriptionRunner& operator=(const PersistentSubscriptionRunner&) = delete;
  ~PersistentSubscriptionRunner();

  void stop();
  bool running() const;
  std::exception_ptr error() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::jthread thread_;
};

}  // namespace sourced
