#pragma once
// Where persistent subscriptions keep their state: a registry that every engine provides in the store's
// own database (memory: in the store object; SQLite: tables in the store file; PostgreSQL: tables in the
// store's schema; docs/subscriptions.md documents them for sqlite3/psql). It is the storage contract the
// subscriptions layer builds its consumer on, and what the CLI lists; applications normally use
// sourced/persistent_subscription.hpp instead.
//
// A persistent subscription reads `$all` (optionally filtered) or one stream. Its keys are positions
// (`$all`) or versions (a stream). Its checkpoint is a key: every event at or before it has been handled
// (acknowledged) or parked, so a consumer resumes after it. The checkpoint only moves forward.
//
// Thread-safety: a registry is safe for concurrent use, like its store, and lives as long as its store.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "sourced/error.hpp"
#include "sourced/event.hpp"
#include "sourced/store.hpp"

namespace sourced {

// What a persistent subscription is: given once, at creation. A value type.
struct PersistentSubscriptionConfig {
  // 1-200 bytes of [A-Za-z0-9_.:@-]; unique in the store.
  std::string name;
  // The stream to read; empty: `$all`.
  std::string stream;
  // `$all` only: the events to deliver (evaluated by the engine).
  std::optional<EventFilter> filter;
  // The first checkpoint: delivery starts after this key (0: from the first event). Resolve "end" to the
  // head position (or the stream's last version) before creating.
  std::uint64_t start_after = 0;
  // Most events delivered and not yet acknowledged (back pressure). At least 1.
  std::uint32_t max_in_flight = 100;
  // Deliveries of one event before it is parked. At least 1.
  std::uint32_t max_attempts = 10;
};

// One subscription as stored. A value type.
struct PersistentSubscriptionInfo {
  // Its id in the store, never reused: a subscription deleted and created again under the same name has a
  // new one (what its leases and its consumers' progress are tied to).
  std::uint64_t id = 0;
  PersistentSubscriptionConfig config;
  std::uint64_t checkpoint = 0;
  std::uint64_t parked = 0;     // events parked now
  std::uint64_t in_flight = 0;  // as last reported by its consumer; 0 when nobody holds its lease
  std::string last_error;       // the last failure its consumer reported; empty when none
  Timestamp created_at;
  Timestamp updated_at;
};

// An event set aside after max_attempts failed deliveries, with why. A value type.
struct ParkedEvent {
  std::uint64_t key = 0;  // the subscription's key of the event (position or version)
  Position position;
  std::string stream;
  StreamVersion version;
  Uuid event_id;
  std::string type;
  std::uint32_t attempts = 0;
  std::string error;
  Timestamp parked_at;
  bool replay_requested = false;  // set by request_replay(), cleared when delivered and acknowledged
};

// What a consumer reports at once: the checkpoint, events it parked, parked events it has now handled
// (replayed successfully), and its counters. Applied atomically: all of it or nothing. `unparked` is
// applied first (a key not parked is ignored), then `newly_parked`, which replaces a parked event of the
// same key (a replayed event that failed again); the engine stores each with replay_requested false and,
// when parked_at is unset, the time it stored it. Keys and counts are at most 2^63 - 1.
struct SubscriptionProgress {
  std::uint64_t checkpoint = 0;
  std::vector<ParkedEvent> newly_parked;
  std::vector<std::uint64_t> unparked;  // keys of parked events to remove
  std::uint64_t in_flight = 0;
  std::optional<std::string> last_error;  // nullopt: leave as stored
  // The subscription the consumer holds the lease of (SubscriptionLease::subscription_id()): the progress
  // is applied only while `name` still names it, so the consumer of a deleted subscription never writes
  // into a successor of the same name. 0: whichever subscription `name` names now (tools, tests).
  std::uint64_t subscription_id = 0;
};

// The subscription `name` does not exist.
class SubscriptionNotFound : public Error {
 public:
  explicit SubscriptionNotFound(std::string name);
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// A subscription named `name` exists already.
class SubscriptionExists : public Error {
 public:
  explicit SubscriptionExists(std::string name);
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// Another consumer holds the subscription: `holder` says who ("pid 4242 on host db1", as the engine knows it).
class SubscriptionLocked : public Error {
 public:
  SubscriptionLocked(std::string name, std::string holder);
  const std::string& name() const { return name_; }
  const std::string& holder() const { return holder_; }

 private:
  std::string name_;
  std::string holder_;
};

// The consumer's lease of subscription `name` is gone (on PostgreSQL: its session ended), so another
// consumer may hold the subscription now. The consumer stops without saving: what it acknowledged since
// its last save is delivered again to the next holder. Transient: opening the subscription again waits
// for (or takes) the lease afresh.
class SubscriptionLeaseLost : public Error {
 public:
  explicit SubscriptionLeaseLost(std::string name);
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// Held by the one consumer of a subscription; releasing it (destroying it) lets the next one in. The
// operating system or the server releases it when the holding process dies. Not thread-safe; may be
// moved between threads; may outlive its store. A lease holds one subscription, by id: deleting the
// subscription does not end the lease (its consumer learns of it when save_progress, given the lease's
// subscription_id(), throws SubscriptionNotFound), and a new subscription of the same name is not held
// by it.
class SubscriptionLease {
 public:
  virtual ~SubscriptionLease() = default;
  // False once the lease is known lost, so another consumer may hold the subscription now: on
  // PostgreSQL, when the lease's session ended (its connection broke, the server restarted or an
  // administrator ended it), which also released the lock. Memory and SQLite leases are never lost while
  // the process lives. Costs a round trip on PostgreSQL: check it before saving progress, not per event.
  virtual bool held() { return true; }
  // The id (PersistentSubscriptionInfo::id) of the subscription it holds.
  std::uint64_t subscription_id() const { return subscription_id_; }

 protected:
  explicit SubscriptionLease(std::uint64_t subscription_id) : subscription_id_(subscription_id) {}

 private:
  std::uint64_t subscription_id_;
};

class SubscriptionRegistry {
 public:
  virtual ~SubscriptionRegistry() = default;

  // Throws SubscriptionExists, or InvalidArgument for a bad name or settings. Every operation throws
  // InvalidArgument for a malformed name (get() included), before touching the store.
  virtual void create(const PersistentSubscriptionConfig& config) = 0;
  // Removes the subscription and its parked events; false when it did not exist.
  virtual bool remove(std::string_view name) = 0;
  virtual std::optional<PersistentSubscriptionInfo> get(std::string_view name) = 0;
  // Ordered by name.
  virtual std::vector<PersistentSubscriptionInfo> list() = 0;
  // Changes an existing subscription's limits (what it reads and where it started stay). A consumer reads
  // them when it opens: one holding the lease now keeps the old ones until it reopens. Throws
  // SubscriptionNotFound, or InvalidArgument for a limit out of range.
  virtual void update_limits(std::string_view name, std::uint32_t max_in_flight, std::uint32_t max_attempts) = 0;

  // Applies a consumer's progress atomically. The checkpoint never moves back (a lower one is ignored).
  // Throws SubscriptionNotFound when `name` names no subscription, or another one than
  // progress.subscription_id (when set).
  virtual void save_progress(std::string_view name, const SubscriptionProgress& progress) = 0;
  // Parked events in key order, after `after_key`, at most `limit`.
  virtual std::vector<ParkedEvent> parked(std::string_view name, std::uint64_t after_key = 0,
                                          std::size_t limit = 1000) = 0;
  // Marks every parked event of the subscription for redelivery; returns how many. The consumer delivers
  // them before new events and unparks each once acknowledged. Throws SubscriptionNotFound.
  virtual std::uint64_t request_replay(std::string_view name) = 0;

  // Takes the subscription's one-consumer lease. With `wait`, blocks until the holder lets go (or dies),
  // `stop` is requested or `timeout` passes; without, fails at once. Throws SubscriptionLocked naming
  // the holder when it could not take it, SubscriptionNotFound when there is no such subscription. The
  // lease holds the subscription `name` names when it is taken: a waiting acquire follows a subscription
  // deleted and created again meanwhile (or throws SubscriptionNotFound if it looks while none exists),
  // never waiting for the lease of a deleted one.
  virtual std::unique_ptr<SubscriptionLease> acquire(std::string_view name, bool wait,
                                                     std::chrono::milliseconds timeout, std::stop_token stop = {}) = 0;
  // Who holds the lease now (as in SubscriptionLocked::holder), or nullopt when nobody does (or there is
  // no such subscription). Just after a takeover it may still name the previous holder for a moment.
  virtual std::optional<std::string> holder(std::string_view name) = 0;
};

}  // namespace sourced
