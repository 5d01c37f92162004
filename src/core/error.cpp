#include "sourced/error.hpp"

#include <fmt/format.h>

namespace sourced {
namespace {

std::string describe_expected(ExpectedVersion e) {
  switch (e.kind()) {
    case ExpectedVersion::Kind::any:
      return "any version";
    case ExpectedVersion::Kind::no_stream:
      return "no stream";
    case ExpectedVersion::Kind::stream_exists:
      return "an existing stream";
    case ExpectedVersion::Kind::exact:
      return fmt::format("version {}", e.version().value());
  }
  return "?";
}

std::string describe_actual(std::optional<StreamVersion> actual, bool deleted) {
  if (!actual) return "the stream does not exist";
  if (deleted) return fmt::format("the stream was soft-deleted at version {}", actual->value());
  return fmt::format("it is at version {}", actual->value());
}

}  // namespace

WrongExpectedVersion::WrongExpectedVersion(std::string stream, ExpectedVersion expected,
                                           std::optional<StreamVersion> actual, bool deleted)
    : Error(ErrorCode::wrong_expected_version,
            fmt::format("wrong expected version for stream '{}': expected {}, but {}", stream,
                        describe_expected(expected), describe_actual(actual, deleted))),
      stream_(std::move(stream)),
      expected_(expected),
      actual_(actual),
      soft_deleted_(deleted) {}

StreamNotFound::StreamNotFound(std::string stream)
    : Error(ErrorCode::stream_not_found, fmt::format("stream '{}' not found", stream)), stream_(std::move(stream)) {}

StreamDeleted::StreamDeleted(std::string stream)
    : Error(ErrorCode::stream_deleted,
            fmt::format("stream '{}' was deleted permanently (tombstoned) and cannot be read or written", stream)),
      stream_(std::move(stream)) {}

DuplicateEventId::DuplicateEventId(Uuid id, std::string stream, std::string stored_stream, StreamVersion stored_version)
    : Error(ErrorCode::duplicate_event_id,
            fmt::format("cannot append event {} to stream '{}': that id is already stored as version {} of "
                        "stream '{}'",
                        id.to_string(), stream, stored_version.value(), stored_stream)),
      id_(id),
      stream_(std::move(stream)),
      stored_stream_(std::move(stored_stream)),
      stored_version_(stored_version) {}

StoreNotFound::StoreNotFound(std::string location)
    : Error(ErrorCode::store_not_found,
            fmt::format("no event store at '{}' (it was opened without creating one)", location)),
      location_(std::move(location)) {}

}  // namespace sourced
