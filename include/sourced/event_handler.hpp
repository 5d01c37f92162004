#pragma once
// Event handlers: side effects (e-mails, webhooks, calls to other systems) driven by events, at least
// once, through a persistent subscription of their own (named after the handler, created on first run).
//
//   sourced::EventHandler mailer{
//       .name = "mailer",
//       .filter = sourced::EventFilter{.category = "account"},
//       .handle = [&](const sourced::HandledEvent& h) { outbox.send_once(h.idempotency_key, render(h.event)); },
//       .on_failure = [](const std::exception& e, const sourced::HandledEvent&) {
//         if (dynamic_cast<const BadAddress*>(&e)) return sourced::FailureDecision::skip();
//         return sourced::FailureDecision::retry(5);   // then parked
//       }};
//   sourced::EventHandlerRunner runner(*store, mailer);   // its own thread; resumes after its checkpoint
//   ...
//   runner.stop();
//
// At least once: an event is acknowledged only after the handler returned, and the checkpoint is saved
// every few acks (EventHandlerOptions), so after a crash the events handled since the last save are
// handled again. A handler whose side effect must happen once dedupes by HandledEvent::idempotency_key
// (by default the event's id: stable across redeliveries, restarts and replays of parked events).
//
// When the handler throws, its on_failure policy decides from the exception (EventStoreDB's nack
// actions): retry (after a back-off that doubles, until the event was delivered max_attempts times, then
// park it), skip (record the error and move on), or park at once (kept in the store with the error, to
// be replayed later with `sourced subscription replay-parked NAME`). Every failure is recorded as the
// subscription's last_error, which `sourced subscriptions` shows.
//
// Events are delivered in `$all` order, except that a failed event is delivered again after its
// back-off while later ones go on (up to max_in_flight unsettled): a handler that needs strict order
// per stream sets max_in_flight to 1.

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "sourced/clock.hpp"
#include "sourced/event.hpp"
#include "sourced/persistent_subscription.hpp"
#include "sourced/store.hpp"

namespace sourced {

// One delivery of an event to a handler. Valid during the handler call only.
struct HandledEvent {
  const RecordedEvent& event;
  // What identifies the side effect of this event: the same for every delivery of it.
  const std::string& idempotency_key;
  // 1 for the first delivery, 2 for the first retry, ... (counted since this runner started).
  std::uint32_t attempt = 1;
  // A parked event delivered again after a replay request.
  bool replay = false;
};

// What to do with an event the handler failed on. A value type.
struct FailureDecision {
  NackAction action = NackAction::retry;
  // retry: the deliveries after which the event is parked (at least 1).
  std::uint32_t max_attempts = 5;

  static FailureDecision retry(std::uint32_t max_attempts = 5) { return {NackAction::retry, max_attempts}; }
  static FailureDecision skip() { return {NackAction::skip, 1}; }
  static FailureDecision park() { return {NackAction::park, 1}; }
};

// A named side-effect handler. A value type; the functions are called on the runner's thread only, one
// at a time.
struct EventHandler {
  // Its persistent subscription's name: 1-200 bytes of [A-Za-z0-9_.:@-].
  std::string name;
  // The events it gets (evaluated by the engine); every event when unset.
  std::optional<EventFilter> filter;
  // Does the side effect. Throwing fails the delivery (on_failure decides what next).
  std::function<void(const HandledEvent&)> handle;
  // The idempotency key of an event; unset: the event id (as text).
  std::function<std::string(const RecordedEvent&)> idempotency_key;
  // Decides from the handler's exception; unset: FailureDecision::retry() for every error. One that
  // throws counts as retry() (its message is added to the recorded error); the runner goes on.
  std::function<FailureDecision(const std::exception&, const HandledEvent&)> on_failure;
};

// How a runner consumes; `start`, `max_in_flight` are used only when the runner creates the subscription.
struct EventHandlerOptions {
  // Where a new handler starts: the first event (origin, the default) or events after now (end()).
  SubscriptionStart start = SubscriptionStart::origin();
  std::uint32_t max_in_flight = 100;
  // Wait for another process's runner of the same handler to stop (or die) before taking over; false:
  // the constructor throws SubscriptionLocked.
  bool wait_for_lease = true;
  std::chrono::milliseconds lease_timeout{30'000};
  // The back-off before the second delivery of a failed event, doubled for each later one up to the cap.
  std::chrono::milliseconds retry_backoff{100};
  std::chrono::milliseconds retry_backoff_max{10'000};
  // Save the checkpoint after this many settled events, or this long after the last save: what a crash
  // may make the handler do again.
  std::uint32_t checkpoint_after_acks = 100;
  std::chrono::milliseconds checkpoint_after{1000};
  // Failures (and what was decided) are logged here; default: one line each on stderr. Called on the
  // runner's thread.
  std::function<void(std::string_view)> log;
  // Back-off and save times. nullptr: Clock::steady(). Must outlive the runner.
  Clock* clock = nullptr;
};

// What a runner has done since it started. A value type.
struct EventHandlerStats {
  std::uint64_t handled = 0;  // deliveries the handler returned from
  std::uint64_t failed = 0;   // deliveries it threw on
  std::uint64_t retried = 0;  // failures to be delivered again
  std::uint64_t skipped = 0;
  std::uint64_t parked = 0;
  // Every event at or before it is handled, skipped or parked (saved or not yet).
  std::uint64_t checkpoint = 0;
  std::string last_error;
};

// Creates the handler's subscription when missing (settings from `options`). Throws InvalidArgument for a
// bad name or filter, or when a subscription of that name exists with another filter or reads a stream.
void ensure_event_handler_subscription(EventStore& store, const EventHandler& handler,
                                       const EventHandlerOptions& options = {});

// Runs an event handler on its own thread. The constructor creates the subscription when missing and
// takes its lease (waiting for another runner to let go when wait_for_lease), so when it returns the
// runner is the handler's one consumer; it throws what ensure_event_handler_subscription() and
// open_persistent_subscription() throw. A store error on the thread stops the runner and is kept
// (error()). stop() (or the destructor) returns once the thread has ended: no handler call runs after
// it, progress is saved and the lease released. Thread-safe: every member may be called from any thread
// (stop() from inside the handler only asks). The store must outlive the runner.
class EventHandlerRunner {
 public:
  EventHandlerRunner(EventStore& store, EventHandler handler, EventHandlerOptions options = {});
  EventHandlerRunner(const EventHandlerRunner&) = delete;
  EventHandlerRunner& operator=(const EventHandlerRunner&) = delete;
  ~EventHandlerRunner();

  void stop();
  bool running() const;
  std::exception_ptr error() const;
  EventHandlerStats stats() const;
  // Blocks until every event at or before `position` is handled, skipped or parked (the checkpoint
  // reached it), `timeout` passes or the runner stops; true when reached.
  bool wait_for(Position position, std::chrono::milliseconds timeout) const;
  const std::string& name() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::jthread thread_;
};

}  // namespace sourced
