#include "store/append_rules.hpp"

#include <unordered_set>

#include <fmt/format.h>

namespace sourced::detail {

void validate_stream_id(std::string_view stream) {
  if (auto problem = stream_id_problem(stream)) {
    throw InvalidArgument(fmt::format("invalid stream id: {}", *problem));
  }
}

std::vector<PreparedEvent> prepare_append(std::string_view stream, std::span<const EventData> events) {
  validate_stream_id(stream);
  if (is_system_stream(stream)) {
    throw InvalidArgument(
        fmt::format("stream '{}' is reserved for the system: ids starting with '$' cannot be "
                    "written",
                    stream));
  }
  std::vector<PreparedEvent> out;
  out.reserve(events.size());
  std::unordered_set<Uuid> seen;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const EventData& e = events[i];
    if (auto problem = event_type_problem(e.type)) {
      throw InvalidArgument(fmt::format("event {} of the append to stream '{}': {}", i + 1, stream, *problem));
    }
    if (e.id && e.id->is_nil()) {
      throw InvalidArgument(
          fmt::format("event {} of the append to stream '{}': the nil UUID is not an event id", i + 1, stream));
    }
    PreparedEvent p{&e,
                    e.id                      ? *e.id
                    : generate_id_for_testing ? generate_id_for_testing()
                                              : Uuid::v7(),
                    e.id.has_value()};
    if (p.id_given && !seen.insert(p.id).second) {
      throw InvalidArgument(
          fmt::format("the append to stream '{}' contains event id {} twice", stream, p.id.to_string()));
    }
    out.push_back(p);
  }
  return out;
}

void validate_delete(std::string_view stream) {
  validate_stream_id(stream);
  if (is_system_stream(stream)) {
    throw InvalidArgument(
        fmt::format("stream '{}' is reserved for the system: ids starting with '$' cannot be deleted", stream));
  }
}

StreamState decide_delete(std::string_view stream, const StreamState& state, ExpectedVersion expected,
                          DeleteMode mode) {
  check_expected(stream, state, expected);
  if (mode == DeleteMode::soft && !state.exists) throw StreamNotFound(std::string(stream));
  StreamState after = state;
  after.exists = true;
  after.hidden_through = state.last;
  after.tombstoned = mode == DeleteMode::tombstone;
  return after;
}

StorageError generated_id_collision(std::string_view stream) {
  return StorageError(fmt::format("an event id generated for the append to stream '{}' is already stored; nothing "
                                  "was written: repeat the append",
                                  stream),
                      true);
}

void check_expected(std::string_view stream, const StreamState& state, ExpectedVersion expected) {
  if (state.tombstoned) throw StreamDeleted(std::string(stream));
  bool ok = false;
  switch (expected.kind()) {
    case ExpectedVersion::Kind::any:
      ok = true;
      break;
    case ExpectedVersion::Kind::no_stream:
      ok = !state.has_visible_events();
      break;
    case ExpectedVersion::Kind::stream_exists:
      ok = state.has_visible_events();
      break;
    case ExpectedVersion::Kind::exact:
      ok = expected.version() == state.last;
      break;
  }
  if (!ok) {
    std::optional<StreamVersion> actual;
    if (state.exists && state.last.value() > 0) actual = state.last;
    throw WrongExpectedVersion(std::string(stream), expected, actual, state.soft_deleted());
  }
}

std::optional<AppendResult> check_replay(std::string_view stream, const StreamState& state, ExpectedVersion expected,
                                         std::span<const PreparedEvent> events,
                                         const std::function<std::optional<StoredLocation>(const Uuid&)>& lookup) {
  if (state.tombstoned) throw StreamDeleted(std::string(stream));
  std::vector<std::optional<StoredLocation>> found(events.size());
  std::size_t found_count = 0;
  std::size_t first_found = events.size();
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (!events[i].id_given) continue;
    found[i] = lookup(events[i].id);
    if (found[i]) {
      ++found_count;
      if (first_found == events.size()) first_found = i;
    }
  }
  if (found_count == 0) return std::nullopt;
  const StoredLocation& first = *found[first_found];
  // Not a repeat: like EventStoreDB, the expected version is checked first, so one append gets one error
  // whatever part of it was stored before; a reused id is reported only when the stream is as expected.
  auto duplicate = [&](std::size_t i) {
    check_expected(stream, state, expected);
    return DuplicateEventId(events[i].id, std::string(stream), found[i]->stream, found[i]->version);
  };
  if (found_count != events.size()) throw duplicate(first_found);
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (found[i]->stream != stream || found[i]->version.value() != first.version.value() + i) throw duplicate(i);
  }
  bool matches = false;
  switch (expected.kind()) {
    case ExpectedVersion::Kind::any:
      matches = true;
      break;
    case ExpectedVersion::Kind::stream_exists:
      matches = true;
      break;
    // The append found no visible event before it: it was the stream's first, or it directly followed
    // the (latest) soft delete.
    case ExpectedVersion::Kind::no_stream:
      matches = first.version.value() == 1 || first.version.value() - 1 == state.hidden_through.value();
      break;
    case ExpectedVersion::Kind::exact:
      matches = expected.version().value() + 1 == first.version.value();
      break;
  }
  // The events are stored, but not where this writer expected: it is a different append.
  if (!matches) throw duplicate(first_found);
  AppendResult r;
  r.first_version = first.version;
  r.last_version = found.back()->version;
  r.first_position = first.position;
  r.last_position = found.back()->position;
  r.replayed = true;
  return r;
}

namespace {
std::uint64_t start_key(std::optional<std::uint64_t> from, Direction direction) {
  return from ? *from : direction == Direction::forward ? 1 : kUnlimited;
}
}  // namespace

EventReader make_stream_reader(std::string_view stream, const StreamState& state, const ReadStreamOptions& options,
                               std::shared_ptr<PageSource> pages, std::size_t page_size) {
  if (state.tombstoned) throw StreamDeleted(std::string(stream));
  auto found = state.has_visible_events() ? EventReader::State::ok : EventReader::State::stream_not_found;
  auto from = start_key(options.from ? std::optional(options.from->value()) : std::nullopt, options.direction);
  return EventReader({.source = std::move(pages),
                      .stream = std::string(stream),
                      .state = found,
                      .direction = options.direction,
                      .from = from,
                      .max_count = options.max_count,
                      .key = ReadKey::version,
                      .page_size = page_size});
}

EventReader make_all_reader(const ReadAllOptions& options, std::shared_ptr<PageSource> pages, std::size_t page_size) {
  auto from = start_key(options.from ? std::optional(options.from->value()) : std::nullopt, options.direction);
  return EventReader({.source = std::move(pages),
                      .stream = std::string(kAllStream),
                      .direction = options.direction,
                      .from = from,
                      .max_count = options.max_count,
                      .key = ReadKey::position,
                      .page_size = page_size});
}

StreamInfo make_info(std::string stream, const StreamState& state, Timestamp created, Timestamp updated) {
  StreamInfo info;
  info.stream = std::move(stream);
  info.last_version = state.last;
  info.event_count = state.last.value() - state.hidden_through.value();
  info.status = state.status();
  info.created_at = created;
  info.updated_at = updated;
  return info;
}

}  // namespace sourced::detail
