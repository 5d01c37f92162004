#pragma once
// Errors. Policy: a failure throws a subclass of sourced::Error that carries the facts (which stream,
// which versions); an outcome that is normal uses a return value (std::optional for "no such stream"
// where a missing thing is expected). Every Error has a code() so tools can map it to an exit status
// without string matching.

#include <optional>
#include <stdexcept>
#include <string>

#include "sourced/event.hpp"

namespace sourced {

enum class ErrorCode {
  invalid_argument,        // bad input: stream id, event type, UUID, JSON, options
  wrong_expected_version,  // optimistic concurrency check failed
  stream_not_found,        // the stream has no events, or was soft-deleted
  stream_deleted,          // the stream was tombstoned: it can never be read or written again
  duplicate_event_id,      // an event id is already stored elsewhere
  serialization,           // stored bytes could not be turned into the requested type
  connection,              // the store's server could not be reached, or the link broke
  storage,                 // the engine failed (I/O, corruption, permissions)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

class InvalidArgument : public Error {
 public:
  explicit InvalidArgument(const std::string& message) : Error(ErrorCode::invalid_argument, message) {}
};

// The stream was not at the version the writer expected. Nothing was written.
class WrongExpectedVersion : public Error {
 public:
  // `actual` is nullopt when the stream has never had an event; `deleted` when it was soft-deleted.
  WrongExpectedVersion(std::string stream, ExpectedVersion expected, std::optional<StreamVersion> actual,
                       bool deleted = false);
  const std::string& stream() const { return stream_; }
  ExpectedVersion expected() const { return expected_; }
  std::optional<StreamVersion> actual() const { return actual_; }

 private:
  std::string stream_;
  ExpectedVersion expected_;
  std::optional<StreamVersion> actual_;
};

class StreamNotFound : public Error {
 public:
  explicit StreamNotFound(std::string stream);
  const std::string& stream() const { return stream_; }

 private:
  std::string stream_;
};

class StreamDeleted : public Error {
 public:
  explicit StreamDeleted(std::string stream);
  const std::string& stream() const { return stream_; }

 private:
  std::string stream_;
};

// An append reused an event id that is stored at another place (another stream or version), so it is
// neither new nor a repeat of an earlier append.
class DuplicateEventId : public Error {
 public:
  DuplicateEventId(Uuid id, std::string stream, std::string stored_stream, StreamVersion stored_version);
  Uuid id() const { return id_; }
  const std::string& stream() const { return stream_; }

 private:
  Uuid id_;
  std::string stream_;
};

class ConnectionError : public Error {
 public:
  explicit ConnectionError(const std::string& message) : Error(ErrorCode::connection, message) {}
};

class StorageError : public Error {
 public:
  explicit StorageError(const std::string& message) : Error(ErrorCode::storage, message) {}
};

}  // namespace sourced
