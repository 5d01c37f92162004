#pragma once
// The rules of an append that every engine shares: input validation, the expected-version check and the
// idempotency decision. Engines supply the facts (the stream's state, where an id is stored); these
// functions decide, so all engines agree by construction and the conformance suite checks the rest.

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sourced/store.hpp"
#include "store/page_source.hpp"

namespace sourced::detail {

struct PreparedEvent {
  const EventData* data;
  Uuid id;
  bool id_given;  // the caller chose the id, so it may repeat an earlier append
};

// A stream as an engine sees it when it appends or deletes.
struct StreamState {
  bool exists = false;           // the stream has a record (it was written or tombstoned)
  StreamVersion last;            // highest version written
  StreamVersion hidden_through;  // versions <= this were soft-deleted
  bool tombstoned = false;

  bool has_visible_events() const { return last > hidden_through; }
  bool soft_deleted() const { return exists && !tombstoned && last.value() > 0 && last == hidden_through; }
  StreamStatus status() const {
    return tombstoned ? StreamStatus::tombstoned : soft_deleted() ? StreamStatus::soft_deleted : StreamStatus::active;
  }
};

struct StoredLocation {
  std::string stream;
  StreamVersion version;
  Position position;
};

// For tests only: while set on a thread, the ids generated for appends made on that thread come from it
// (so a test can make a generated id collide with a stored one).
inline thread_local Uuid (*generate_id_for_testing)() = nullptr;

// Throws InvalidArgument for a bad stream id (or a system stream) and bad events; fills ids.
std::vector<PreparedEvent> prepare_append(std::string_view stream, std::span<const EventData> events);
// Throws InvalidArgument when `stream` is not a valid id. Reserved ($) names are allowed: reading them is
// fine, writing them is refused by prepare_append.
void validate_stream_id(std::string_view stream);

// Throws InvalidArgument when `stream` may not be deleted (a bad id, or a system stream). Called before
// anything is read, so every engine refuses the same input with the same message.
void validate_delete(std::string_view stream);
// Decides a delete of `stream`, whose state is `state`: throws StreamDeleted (already tombstoned),
// WrongExpectedVersion, or StreamNotFound (soft-deleting a stream that never existed). Returns the state
// the engine must record: hidden_through moves to the last version; a tombstone of a never-written
// stream creates its record (reserving the name).
StreamState decide_delete(std::string_view stream, const StreamState& state, ExpectedVersion expected, DeleteMode mode);

// The error every engine throws when an id it generated is already stored (a UUIDv7 collision: 74 random
// bits per millisecond make it all but impossible). Nothing was written, so the append may be repeated:
// it is transient and blames no caller.
StorageError generated_id_collision(std::string_view stream);

// Throws StreamDeleted or WrongExpectedVersion when `expected` does not hold for `state`.
void check_expected(std::string_view stream, const StreamState& state, ExpectedVersion expected);

// Decides whether an append repeats an earlier one. `lookup` tells where an id is stored. Returns the
// original result for a repeat, nullopt for a new append; throws DuplicateEventId when some ids are
// stored elsewhere, WrongExpectedVersion when a repeat does not match `expected`.
std::optional<AppendResult> check_replay(std::string_view stream, const StreamState& state, ExpectedVersion expected,
                                         std::span<const PreparedEvent> events,
                                         const std::function<std::optional<StoredLocation>(const Uuid&)>& lookup);

// A reader over one stream, given its state as the engine just read it: throws StreamDeleted for a
// tombstone, says stream_not_found when nothing is visible, and starts where `options` says.
EventReader make_stream_reader(std::string_view stream, const StreamState& state, const ReadStreamOptions& options,
                               std::shared_ptr<PageSource> pages, std::size_t page_size);
// A reader over `$all`.
EventReader make_all_reader(const ReadAllOptions& options, std::shared_ptr<PageSource> pages, std::size_t page_size);

// The stream's information from its state and bookkeeping.
StreamInfo make_info(std::string stream, const StreamState& state, Timestamp created, Timestamp updated);

}  // namespace sourced::detail
