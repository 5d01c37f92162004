#include "sourced/event_handler.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>

#include <fmt/format.h>

#include "sourced/error.hpp"
#include "subscription_filter.hpp"

namespace sourced {
namespace {

// How long the runner's thread waits for a delivery in one call. Short, because the checkpoint a filtered
// subscription reaches past its last event (a scan or caught-up notice) is only seen between calls, and
// wait_for() waits for it.
constexpr std::chrono::milliseconds kPollWait(20);

// The handler parks events itself (FailureDecision::max_attempts); the subscription's own limit only
// backs that up.
constexpr std::uint32_t kSubscriptionMaxAttempts = 1'000'000;

using detail::same_filter;
std::string describe(const std::optional<EventFilter>& f) { return detail::describe_filter(f); }

std::string_view action_name(NackAction a) {
  switch (a) {
    case NackAction::retry:
      return "retry";
    case NackAction::park:
      return "park";
    case NackAction::skip:
      return "skip";
  }
  return "?";
}

}  // namespace

void ensure_event_handler_subscription(EventStore& store, const EventHandler& handler,
                                       const EventHandlerOptions& options) {
  if (!handler.handle) throw InvalidArgument("event handler " + handler.name + " has no handle function");
  auto check = [&](const PersistentSubscriptionInfo& info) {
    if (!info.config.stream.empty() || !same_filter(info.config.filter, handler.filter)) {
      throw InvalidArgument(fmt::format(
          "event handler {}: its subscription exists and reads {}, but the handler asks for {} (delete the "
          "subscription to start the handler again with the new filter)",
          handler.name, info.config.stream.empty() ? describe(info.config.filter) : "the stream " + info.config.stream,
          describe(handler.filter)));
    }
  };
  // The handler parks by its own policy (FailureDecision::retry(N)); a subscription created elsewhere with
  // a lower limit (by hand, or by an older version) would park its events before the policy says, so the
  // limit is raised. Never lowered: another process may run a handler that needs it.
  auto raise_limit = [&](const PersistentSubscriptionInfo& info) {
    if (info.config.max_attempts >= kSubscriptionMaxAttempts) return;
    auto line = fmt::format(
        "sourced: event handler {}: its subscription parked events after {} attempts; raised to {} so that the "
        "handler's failure policy decides",
        handler.name, info.config.max_attempts, kSubscriptionMaxAttempts);
    if (options.log) {
      options.log(line);
    } else {
      fmt::print(stderr, "{}\n", line);
    }
    update_persistent_subscription(store, handler.name, info.config.max_in_flight, kSubscriptionMaxAttempts);
  };
  if (auto info = persistent_subscription_info(store, handler.name)) {
    check(*info);
    raise_limit(*info);
    return;
  }
  try {
    create_persistent_subscription(store, handler.name,
                                   {.filter = handler.filter,
                                    .start = options.start,
                                    .max_in_flight = options.max_in_flight,
                                    .max_attempts = kSubscriptionMaxAttempts});
  } catch (const SubscriptionExists&) {
    // Another process created it meanwhile.
    if (auto info = persistent_subscription_info(store, handler.name)) {
      check(*info);
      raise_limit(*info);
    }
  }
}

struct EventHandlerRunner::State {
  std::string name;
  std::atomic<bool> running{true};
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  // Guarded by mu.
  EventHandlerStats stats;
  std::exception_ptr error;
};

EventHandlerRunner::EventHandlerRunner(EventStore& store, EventHandler handler, EventHandlerOptions options)
    : state_(std::make_shared<State>()) {
  state_->name = handler.name;
  ensure_event_handler_subscription(store, handler, options);
  PersistentSubscription sub = open_persistent_subscription(store, handler.name,
                                                            {.wait_for_lease = options.wait_for_lease,
                                                             .lease_timeout = options.lease_timeout,
                                                             .retry_backoff = options.retry_backoff,
                                                             .retry_backoff_max = options.retry_backoff_max,
                                                             .checkpoint_after_acks = options.checkpoint_after_acks,
                                                             .checkpoint_after = options.checkpoint_after,
                                                             .clock = options.clock});
  {
    std::lock_guard lock(state_->mu);
    state_->stats.checkpoint = sub.checkpoint();
  }
  if (!options.log) {
    options.log = [](std::string_view line) { fmt::print(stderr, "{}\n", line); };
  }
  thread_ = std::jthread([state = state_, sub = std::move(sub), handler = std::move(handler),
                          log = std::move(options.log)](std::stop_token stop) mutable {
    auto publish = [&](auto&& change) {
      {
        std::lock_guard lock(state->mu);
        change(state->stats);
        state->stats.checkpoint = sub.checkpoint();
      }
      state->cv.notify_all();
    };
    try {
      std::string key;
      while (!stop.stop_requested()) {
        auto d = sub.next(kPollWait, stop);
        if (!d) {
          publish([](EventHandlerStats&) {});
          continue;
        }
        const RecordedEvent& event = *d->event;
        std::optional<FailureDecision> decision;
        std::string error;
        // A key function that throws (a field missing from one event) is that event's failure: retried, then
        // parked, with the error recorded; the handler is not called without its key.
        try {
          key = handler.idempotency_key ? handler.idempotency_key(event) : event.id.to_string();
        } catch (const std::exception& e) {
          error = fmt::format("idempotency_key threw: {}", e.what());
          decision = FailureDecision::retry();
        } catch (...) {
          error = "idempotency_key threw";
          decision = FailureDecision::retry();
        }
        HandledEvent h{event, key, d->attempt, d->replay};
        if (!decision) {
          try {
            handler.handle(h);
          } catch (const std::exception& e) {
            error = e.what();
            decision = FailureDecision::retry();
            if (handler.on_failure) {
              // A policy that throws must not stop the runner (the delivery would stay unsettled until a
              // restart): it is a failure of this event like the handler's, retried and parked in time.
              try {
                decision = handler.on_failure(e, h);
              } catch (const std::exception& policy) {
                error += fmt::format(" (and on_failure threw: {})", policy.what());
              } catch (...) {
                error += " (and on_failure threw)";
              }
            }
          } catch (...) {
            error = "unknown exception";
            decision = FailureDecision::retry();
          }
        }
        if (!decision) {
          sub.ack(d->key);
          publish([](EventHandlerStats& s) { ++s.handled; });
          continue;
        }
        NackAction action = decision->action;
        if (action == NackAction::retry && d->attempt >= std::max<std::uint32_t>(decision->max_attempts, 1)) {
          action = NackAction::park;
        }
        // What `sourced subscriptions` shows: which event, which attempt, what the handler said.
        std::string recorded =
            fmt::format("{}@{} (position {}, event {}, attempt {}): {}", event.stream, event.version.value(),
                        event.position.value(), event.id.to_string(), d->attempt, error);
        log(fmt::format("sourced: event handler {}: {}; {}", state->name, recorded, action_name(action)));
        sub.nack(d->key, recorded, action);
        publish([&](EventHandlerStats& s) {
          ++s.failed;
          s.last_error = recorded;
          if (action == NackAction::retry) ++s.retried;
          if (action == NackAction::skip) ++s.skipped;
          if (action == NackAction::park) ++s.parked;
        });
      }
      sub.close();
    } catch (...) {
      std::lock_guard lock(state->mu);
      state->error = std::current_exception();
    }
    {
      std::lock_guard lock(state->mu);  // so a waiter cannot miss the change between its check and its wait
      state->running = false;
    }
    state->cv.notify_all();
  });
}

EventHandlerRunner::~EventHandlerRunner() { stop(); }

void EventHandlerRunner::stop() {
  thread_.request_stop();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

bool EventHandlerRunner::running() const { return state_->running; }

std::exception_ptr EventHandlerRunner::error() const {
  std::lock_guard lock(state_->mu);
  return state_->error;
}

EventHandlerStats EventHandlerRunner::stats() const {
  std::lock_guard lock(state_->mu);
  return state_->stats;
}

bool EventHandlerRunner::wait_for(Position position, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(state_->mu);
  return state_->cv.wait_for(lock, timeout, [&] {
    return state_->stats.checkpoint >= position.value() || !state_->running;
  }) && state_->stats.checkpoint >= position.value();
}

const std::string& EventHandlerRunner::name() const { return state_->name; }

}  // namespace sourced
