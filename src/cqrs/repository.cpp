#include "sourced/repository.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace sourced {

InvalidCommand::InvalidCommand(std::string command_type, FieldError error)
    : InvalidArgument(fmt::format("invalid {} command: {} {}", command_type, error.field, error.message)),
      command_type_(std::move(command_type)),
      error_(std::move(error)) {}

Uuid command_event_id(const Uuid& command_id, std::uint64_t index) {
  Uuid derived = Uuid::v5(command_id, std::to_string(index));
  if (command_id.version() != 7) return derived;
  Uuid::Bytes b = derived.bytes();
  for (int i = 0; i < 6; ++i) b[i] = command_id.bytes()[i];  // the command's millisecond timestamp
  b[6] = static_cast<std::uint8_t>(0x80 | (b[6] & 0x0F));    // version 8: custom, still RFC 9562
  return Uuid(b);
}

namespace detail {
namespace {
constexpr std::string_view kSnapshotType = "$snapshot";
}  // namespace

std::optional<SnapshotRecord> read_snapshot(EventStore& store, const std::string& snapshot_stream) {
  ReadStreamOptions latest;
  latest.direction = Direction::backward;
  latest.max_count = 1;
  EventReader reader = store.read_stream(snapshot_stream, latest);
  if (reader.state() == EventReader::State::stream_not_found) return std::nullopt;
  const RecordedEvent* e = reader.next();
  if (!e || e->type != kSnapshotType) return std::nullopt;
  try {
    auto meta = nlohmann::json::parse(e->metadata);
    auto id = Uuid::parse(meta.at("event_id").get<std::string>());
    if (!id) return std::nullopt;
    SnapshotRecord record;
    record.version = StreamVersion(meta.at("stream_version").get<std::uint64_t>());
    record.event_id = *id;
    record.snapshot_version = meta.at("snapshot_version").get<int>();
    record.data = e->data;
    return record;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // unreadable: load folds from the first event
  }
}

bool write_snapshot(EventStore& store, const std::string& snapshot_stream, const SnapshotRecord& snapshot,
                    ContentType content_type) noexcept {
  try {
    EventData e;
    e.type = std::string(kSnapshotType);
    e.data = snapshot.data;
    e.metadata = nlohmann::json{{"stream_version", snapshot.version.value()},
                                {"event_id", snapshot.event_id.to_string()},
                                {"snapshot_version", snapshot.snapshot_version}}
                     .dump();
    e.content_type = content_type;
    store.append(snapshot_stream, ExpectedVersion::any(), {e});
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

CommandTracker::CommandTracker(std::optional<Uuid> command_id) : command_id_(command_id) {
  if (command_id_) next_ = command_event_id(*command_id_, 0);
}

void CommandTracker::see_slow(const RecordedEvent& event) {
  if (event.id != next_) {
    if (found_) done_ = true;  // the command's events are contiguous: they ended before this one
    return;
  }
  if (!found_) found_ = CommandEvents{event.version, event.version, event.position, 0};
  found_->last = event.version;
  found_->last_position = event.position;
  ++found_->count;
  next_ = command_event_id(*command_id_, found_->count);
}

std::optional<CommandEvents> find_command_events(EventStore& store, std::string_view stream, StreamVersion from,
                                                 std::optional<StreamVersion> through, const Uuid& command_id) {
  ReadStreamOptions options;
  options.from = from;
  EventReader reader = store.read_stream(stream, options);
  if (reader.state() == EventReader::State::stream_not_found) return std::nullopt;
  CommandTracker tracker(command_id);
  while (const RecordedEvent* e = reader.next()) {
    // The command's first event must be at or before `through`; its run may go on past it.
    if (!tracker.found() && through && e->version > *through) break;
    tracker.see(*e);
    if (tracker.done()) break;
  }
  return tracker.found();
}

CommandResult repeated_result(CommandResult result, const CommandEvents& events) {
  result.repeated = true;
  result.stream_version = events.last;
  result.position = events.last_position;
  result.events_written = events.count;
  return result;
}

}  // namespace detail
}  // namespace sourced
