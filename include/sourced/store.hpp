#pragma once
// sourced::EventStore: streams of events with optimistic concurrency, and one global ordered log `$all`.
//
// An EventStore is safe for concurrent use from many threads without external synchronisation.
//
// Lifetimes: destroy a store only once no other thread is calling into it, with one exception: threads
// blocked in wait_for_events_after() are woken by the destructor, return as on a timeout, and the
// destructor waits for them to leave. Readers (EventReader) may outlive the store that made them: each
// keeps alive what it reads from (the connection pool, the memory engine's log). Engines:
// memory (tests), SQLite (the embedded default) and PostgreSQL (shared by many processes); open one with
// open_store() or the engine's own open_*_store(). The semantics below hold for every engine; the
// conformance suite in tests/store pins them down.
//
//   auto store = sourced::open_store("bank.db");
//   auto r = store->append("account-42", ExpectedVersion::no_stream(),
//                          {{.type = "Opened", .data = R"({"owner":"Ada"})"}});
//   for (const auto& e : store->read_stream("account-42")) { ... }

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "sourced/error.hpp"
#include "sourced/event.hpp"
#include "sourced/reader.hpp"

namespace sourced {

class SubscriptionRegistry;  // sourced/subscription_registry.hpp

struct AppendResult {
  // Versions of the first and last event written. For an empty append, last_version is the stream's
  // version and first_version the one after it.
  StreamVersion first_version;
  StreamVersion last_version;
  // Positions in `$all` of the first and last event written (0 for an empty append).
  Position first_position;
  Position last_position;
  // True when the append repeated an earlier one (same event ids at the same place) and wrote nothing.
  bool replayed = false;
};

struct ReadStreamOptions {
  Direction direction = Direction::forward;
  // Inclusive. Default: the first event (forward) or the last (backward).
  std::optional<StreamVersion> from;
  std::uint64_t max_count = kUnlimited;
};

// Which events of `$all` a read returns. Engines evaluate it where the events are (in SQL for SQLite and
// PostgreSQL), so a reader of one category does not pull the whole log. A value type.
//
//   store->read_all({.filter = EventFilter{.category = "account", .event_types = {"Deposited"}}});
struct EventFilter {
  // Only streams of this category: "account" matches "account" and "account-42" (see category_of()).
  // A category contains no '-'.
  std::optional<std::string> category;
  // Only streams whose id starts with these bytes. At most one of category and stream_prefix.
  std::optional<std::string> stream_prefix;
  // Only events of these types; any type when empty.
  std::vector<std::string> event_types;

  bool matches(std::string_view stream, std::string_view type) const;
};

struct ReadAllOptions {
  Direction direction = Direction::forward;
  // Inclusive. Default: the first event (forward) or the last (backward).
  std::optional<Position> from;
  // Most events to return (events that pass the filter).
  std::uint64_t max_count = kUnlimited;
  // Only the events that pass; the reader's scanned_through() tells how far it looked past them.
  // Throws InvalidArgument when the filter is malformed.
  std::optional<EventFilter> filter;
};

enum class StreamStatus { active, soft_deleted, tombstoned };

struct StreamInfo {
  std::string stream;
  // The highest version ever written; versions continue from here after a soft delete.
  StreamVersion last_version;
  // Events a read returns now (after a soft delete, only those appended since).
  std::uint64_t event_count = 0;
  StreamStatus status = StreamStatus::active;
  Timestamp created_at;
  Timestamp updated_at;
};

enum class DeleteMode {
  // Hide the stream's events from stream reads; it may be written again, its versions continuing.
  soft,
  // Delete forever: every later read or write of the stream fails with StreamDeleted.
  tombstone,
};

struct StoreStats {
  std::string engine;  // "memory", "sqlite" or "postgres"
  // Streams ever created, including deleted ones.
  std::uint64_t streams = 0;
  // The last position in `$all`. Positions are gapless and no event is ever removed, so this is also the
  // number of events ever appended; there is no separate count (counting rows would cost a full scan).
  Position head;
};

class EventStore {
 public:
  virtual ~EventStore() = default;

  // Appends `events` to `stream` atomically: all are written, contiguous in the stream, or none is.
  // Throws WrongExpectedVersion (nothing written) when the stream is not as expected, StreamDeleted when
  // it was tombstoned, InvalidArgument for a bad stream id or event, DuplicateEventId when an id is
  // stored elsewhere. Repeating an append (same ids, same place) returns the first result. When this
  // returns, the events are durable.
  virtual AppendResult append(std::string_view stream, ExpectedVersion expected, std::span<const EventData> events) = 0;
  AppendResult append(std::string_view stream, ExpectedVersion expected, std::initializer_list<EventData> events) {
    return append(stream, expected, std::span<const EventData>(events.begin(), events.size()));
  }
  AppendResult append(std::string_view stream, ExpectedVersion expected, const std::vector<EventData>& events) {
    return append(stream, expected, std::span<const EventData>(events));
  }

  // Reads one stream lazily. The reader's state() is stream_not_found when the stream has no visible
  // events (never written, or soft-deleted); throws StreamDeleted when it was tombstoned.
  virtual EventReader read_stream(std::string_view stream, ReadStreamOptions options = {}) = 0;
  // Reads the global log lazily, in position order.
  virtual EventReader read_all(ReadAllOptions options = {}) = 0;

  // nullopt when the stream never existed.
  virtual std::optional<StreamInfo> stream_info(std::string_view stream) = 0;
  // Streams ordered by id, starting after `after` (exclusive), at most `limit`; includes deleted ones.
  virtual std::vector<StreamInfo> list_streams(std::string_view after = {}, std::size_t limit = 1000) = 0;

  // Deletes a stream (see DeleteMode), checking `expected` like an append does. Soft-deleting a stream
  // that never existed throws StreamNotFound; tombstoning one reserves its name forever.
  virtual void delete_stream(std::string_view stream, ExpectedVersion expected, DeleteMode mode) = 0;

  // The position of the last event in `$all` (0 when empty).
  virtual Position head_position() = 0;
  // Blocks until `$all` holds an event after `after`, `timeout` passes, or `stop` is requested; returns the
  // head position then (still <= `after` on timeout or stop). What live subscriptions wait on: engines wake
  // waiters as soon as their own appends commit and poll for other processes' appends, so a missed
  // wake-up only delays. Destroying the store wakes its waiters, which then return `after`.
  virtual Position wait_for_events_after(Position after, std::chrono::milliseconds timeout, std::stop_token stop = {});
  virtual StoreStats stats() = 0;

  // Where this store keeps its persistent subscriptions (checkpoints, parked events, the one-consumer
  // lease), in its own database; see sourced/subscription_registry.hpp. Lives as long as the store and is
  // safe for concurrent use like it. Applications normally use sourced/persistent_subscription.hpp.
  virtual SubscriptionRegistry& subscriptions() = 0;
};

}  // namespace sourced
