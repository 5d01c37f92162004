#pragma once
// The core model: what an event is, where it sits (its version in its stream and its position in the
// global log `$all`), and what a writer expects of a stream before appending to it.
//
// Everything here is a value type: safe to copy, move and share between threads once built.

#include <chrono>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sourced/uuid.hpp"

namespace sourced {

namespace detail {
// An unsigned counter that cannot be confused with another kind of counter: a Position can't be passed
// where a StreamVersion is expected.
template <class Tag>
class Ordinal {
 public:
  constexpr Ordinal() = default;
  constexpr explicit Ordinal(std::uint64_t value) : value_(value) {}
  constexpr std::uint64_t value() const { return value_; }
  constexpr Ordinal next() const { return Ordinal(value_ + 1); }
  friend constexpr auto operator<=>(Ordinal, Ordinal) = default;

 private:
  std::uint64_t value_ = 0;
};
}  // namespace detail

// The version of an event within its stream: the first event of a stream is version 1. Version 0 means
// "no event yet".
using StreamVersion = detail::Ordinal<struct StreamVersionTag>;
// The position of an event in `$all`: the first event ever appended is position 1. Position 0 means
// "before the first event". Positions increase in commit order, without gaps as seen by a reader.
using Position = detail::Ordinal<struct PositionTag>;

// UTC wall-clock time with microsecond precision, set by the store when it records an event.
using Timestamp = std::chrono::sys_time<std::chrono::microseconds>;

// What an event's data and metadata are, decided once by its writer and stored with it (as EventStoreDB's
// application/json vs. application/octet-stream), so readers need not inspect the bytes.
enum class ContentType : std::uint8_t {
  // Not said: an event appended without a content type, or stored before stores recorded one. A reader
  // that needs to know must look at the bytes (the CLI checks them as JSON).
  unknown = 0,
  // A promise by the writer: data and metadata are each either empty or one valid JSON text (RFC 8259),
  // and readers may use them as JSON without checking (the CLI prints them unchanged). Stores do not
  // check it: a writer that marks other bytes json makes its readers' output invalid.
  json = 1,
  // Any bytes: the writer does not promise JSON.
  binary = 2,
};

// An event to append. Data and metadata are bytes; by convention they hold JSON.
struct EventData {
  std::string type;
  std::string data;
  std::string metadata;
  // unknown unless the writer says: a caller that appends raw bytes is not taken to promise JSON (which
  // would let readers print bytes unchecked), and a caller of before content types keeps the behaviour it
  // had. to_event_data() with JsonSerializer and the CLI set json.
  ContentType content_type = ContentType::unknown;
  // When empty, the store generates a time-ordered id. Give one to make the append idempotent: repeating
  // it returns the first result and writes nothing.
  std::optional<Uuid> id;
  std::optional<Uuid> correlation_id;
  std::optional<Uuid> causation_id;
};

// An event as stored.
struct RecordedEvent {
  Uuid id;
  std::string stream;
  StreamVersion version;
  Position position;
  std::string type;
  std::string data;
  std::string metadata;
  // As appended; unknown for events stored before the store recorded content types.
  ContentType content_type = ContentType::unknown;
  std::optional<Uuid> correlation_id;
  std::optional<Uuid> causation_id;
  Timestamp created_at;
};

// What a writer expects of a stream: the optimistic-concurrency check of an append or delete.
class ExpectedVersion {
 public:
  enum class Kind { any, no_stream, stream_exists, exact };

  // No check.
  static constexpr ExpectedVersion any() { return ExpectedVersion(Kind::any, 0); }
  // The stream has no (visible) events: it was never written, or it was soft-deleted.
  static constexpr ExpectedVersion no_stream() { return ExpectedVersion(Kind::no_stream, 0); }
  // The stream has at least one visible event.
  static constexpr ExpectedVersion stream_exists() { return ExpectedVersion(Kind::stream_exists, 0); }
  // The stream's last version is exactly `version`. exact(0): the stream was never written.
  static constexpr ExpectedVersion exact(std::uint64_t version) { return ExpectedVersion(Kind::exact, version); }
  static constexpr ExpectedVersion exact(StreamVersion version) { return exact(version.value()); }

  constexpr Kind kind() const { return kind_; }
  // The version for Kind::exact; 0 otherwise.
  constexpr StreamVersion version() const { return StreamVersion(version_); }

  // "any", "no_stream", "stream_exists" or the number: the form the CLI accepts.
  std::string to_string() const;
  // Parses what to_string() prints; nullopt on anything else.
  static std::optional<ExpectedVersion> parse(std::string_view text);

  friend constexpr bool operator==(const ExpectedVersion&, const ExpectedVersion&) = default;

 private:
  constexpr ExpectedVersion(Kind kind, std::uint64_t version) : kind_(kind), version_(version) {}
  Kind kind_;
  std::uint64_t version_;
};

// Longest stream id, in bytes.
inline constexpr std::size_t kMaxStreamIdBytes = 1000;
// Longest event type, in bytes.
inline constexpr std::size_t kMaxEventTypeBytes = 1000;
// The name under which the global log is read.
inline constexpr std::string_view kAllStream = "$all";

// Why `stream` is not a valid stream id (empty, too long, not UTF-8, control characters), or nullopt when
// it is. Names starting with '$' are valid ids but reserved for the system: see is_system_stream().
std::optional<std::string> stream_id_problem(std::string_view stream);
// Why `type` is not a valid event type, or nullopt when it is.
std::optional<std::string> event_type_problem(std::string_view type);
bool is_system_stream(std::string_view stream);
// The text before the first '-': "account" for "account-42"; the whole id when it has no '-'.
std::string_view category_of(std::string_view stream);

// ISO-8601 UTC with microseconds: 2026-11-25T17:01:00.123456Z.
std::string format_timestamp(Timestamp t);
Timestamp now();

}  // namespace sourced
