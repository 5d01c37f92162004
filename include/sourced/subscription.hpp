#pragma once
// Catch-up subscriptions: read `$all` (optionally filtered) or one stream from a start point, deliver the
// history in order, say when it has caught up, then deliver new events as they are appended, with no gap
// and no repeat at the switch. Works on every engine: it needs only the store API.
//
// Two ways to consume:
//   - pull, from one thread:
//       auto sub = sourced::subscribe_to_all(*store, {.filter = EventFilter{.category = "account"}});
//       while (auto m = sub.next(std::chrono::seconds(1))) {
//         if (m->kind == SubscriptionMessage::Kind::event) handle(*m->event);
//       }
//   - a runner that drives a handler on its own thread:
//       sourced::SubscriptionRunner runner(sourced::subscribe_to_all(*store), [](const SubscriptionMessage& m) {...});
//       ...
//       runner.stop();  // returns once the last handler call has finished
//
// Memory stays bounded however far behind the subscriber is: it holds one page of events at a time and
// never buffers live events (it reads them from the store like history, so catching up and following are
// one mechanism). docs/subscriptions.md explains the decisions and how they follow EventStoreDB/KurrentDB.

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

#include "sourced/event.hpp"
#include "sourced/reader.hpp"
#include "sourced/store.hpp"

namespace sourced {

// Where a subscription starts. A value type.
class SubscriptionStart {
 public:
  // From the first event.
  static SubscriptionStart origin() { return SubscriptionStart(Kind::origin, 0); }
  // From the end as it is when the subscription is created: only events appended after that.
  static SubscriptionStart end() { return SubscriptionStart(Kind::end, 0); }
  // After this position (`$all`) or version (a stream), exclusive: what a subscriber that saved its
  // checkpoint passes to resume.
  static SubscriptionStart after(Position p) { return SubscriptionStart(Kind::after, p.value()); }
  static SubscriptionStart after(StreamVersion v) { return SubscriptionStart(Kind::after, v.value()); }

  enum class Kind { origin, end, after };
  Kind kind() const { return kind_; }
  std::uint64_t key() const { return key_; }

 private:
  SubscriptionStart(Kind kind, std::uint64_t key) : kind_(kind), key_(key) {}
  Kind kind_;
  std::uint64_t key_;
};

struct SubscriptionOptions {
  SubscriptionStart start = SubscriptionStart::origin();
  // `$all` only: deliver only the events that pass (evaluated by the engine, see EventFilter).
  std::optional<EventFilter> filter;
  // A filtered subscription sends a checkpoint notice each time it has looked this many positions past
  // its last notice without delivering an event, so its consumer can save progress through long runs of
  // events that do not match (KurrentDB's checkpoint interval). 0: no notices.
  std::uint64_t checkpoint_interval = 4096;
  // A live subscriber that is more than this many positions (`$all`) or versions (a stream) behind the
  // head falls behind: it gets a fell_behind notice, then the events it is behind on, then caught_up again.
  std::uint64_t max_live_lag = 10000;
};

// One thing a subscription delivers. A value type; `event` points into the subscription.
struct SubscriptionMessage {
  enum class Kind {
    event,        // `event` is the next event
    caught_up,    // the history is delivered: what follows is live
    fell_behind,  // the consumer fell too far behind while live: catching up again
    checkpoint,   // a filtered read has looked through `checkpoint` without finding more to deliver
  };
  Kind kind = Kind::event;
  // For Kind::event: valid until the next call to next() (or, in a runner, until the handler returns).
  const RecordedEvent* event = nullptr;
  // Every event at or before this key (position for `$all`, version for a stream) has been delivered or
  // did not pass the filter: the checkpoint to save, and to resume from with SubscriptionStart::after().
  std::uint64_t checkpoint = 0;
};

// A catch-up subscription consumed by pulling. Single-threaded: one thread at a time calls next(); it may
// be moved to another thread between calls. It refers to the store, which must outlive it. No thread of
// its own: it reads and waits in the caller's thread.
class CatchUpSubscription {
 public:
  CatchUpSubscription(CatchUpSubscription&&) noexcept;
  CatchUpSubscription& operator=(CatchUpSubscription&&) noexcept;
  ~CatchUpSubscription();

  // The next message, waiting up to `timeout` for one; nullopt when none came in time or `stop` was
  // requested (which ends a wait for new events at once). Throws what the store throws (StreamDeleted
  // when the subscribed stream is tombstoned, ConnectionError...); the subscription may be used again
  // after an error and resumes where it was.
  std::optional<SubscriptionMessage> next(std::chrono::milliseconds timeout, std::stop_token stop = {});
  // The checkpoint of the last message returned (see SubscriptionMessage::checkpoint).
  std::uint64_t checkpoint() const;
  // True between the caught_up notice and a fell_behind notice.
  bool live() const;
  // Whether next() has an event at hand, read from the store with earlier ones and not yet delivered:
  // a consumer that batches its work (a projection runner) can finish what it holds before it commits.
  bool has_buffered() const;

  class Impl;

 private:
  friend CatchUpSubscription subscribe_to_all(EventStore&, SubscriptionOptions);
  friend CatchUpSubscription subscribe_to_stream(EventStore&, std::string_view, SubscriptionOptions);
  explicit CatchUpSubscription(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Subscribes to `$all`. Throws InvalidArgument for a malformed filter.
CatchUpSubscription subscribe_to_all(EventStore& store, SubscriptionOptions options = {});
// Subscribes to one stream (which need not exist yet); versions are its keys. A filter is refused.
CatchUpSubscription subscribe_to_stream(EventStore& store, std::string_view stream, SubscriptionOptions options = {});

// Drives a subscription on its own thread, calling `handler` with each message in order. The handler
// runs on that thread only, one call at a time. When the handler or the store throws, the runner stops
// and keeps the exception (error()). stop() (or the destructor) returns only once the thread has ended,
// so no handler call is running or will run after it; calling stop() from inside the handler only asks
// the runner to stop after the handler returns. Thread-safe: stop(), running() and error() may be called
// from any thread. The store must outlive the runner.
class SubscriptionRunner {
 public:
  using Handler = std::function<void(const SubscriptionMessage&)>;

  SubscriptionRunner(CatchUpSubscription subscription, Handler handler);
  SubscriptionRunner(const SubscriptionRunner&) = delete;
  SubscriptionRunner& operator=(const SubscriptionRunner&) = delete;
  ~SubscriptionRunner();

  void stop();
  bool running() const;
  // What stopped the runner, or nullptr.
  std::exception_ptr error() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::jthread thread_;
};

}  // namespace sourced
