#pragma once
// Errors. Policy: a failure throws a subclass of sourced::Error that carries the facts (which stream,
// which versions); an outcome that is normal uses a return value (std::optional for "no such stream"
// where a missing thing is expected). Every Error has a code() so tools can map it to an exit status
// without string matching, and says whether it is transient(): whether the same call, repeated later
// unchanged, may succeed (a lost connection, a busy database, a serialization failure). A retry policy
// needs nothing else; a WrongExpectedVersion is not transient (repeating the call cannot change the
// stream's version), but reloading and deciding again can succeed.

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
  store_not_found,         // the store does not exist and was not to be created (OpenOptions)
  subscription_not_found,  // no persistent subscription of that name (subscription_registry.hpp)
  subscription_exists,     // a persistent subscription of that name exists already
  subscription_locked,     // another consumer holds the persistent subscription's lease (transient)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, bool transient = false)
      : std::runtime_error(message), code_(code), transient_(transient) {}
  ErrorCode code() const { return code_; }
  // True when repeating the same call later may succeed: the failure came from the moment (a broken
  // link, a lock held too long by another process, a server restarting), not from the call. An append
  // that failed transiently is safe to repeat with the same event ids: it is idempotent.
  bool transient() const { return transient_; }

 private:
  ErrorCode code_;
  bool transient_;
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
  // The stream was soft-deleted at actual(): it has no visible events, and versions continue after it.
  bool soft_deleted() const { return soft_deleted_; }

 private:
  std::string stream_;
  ExpectedVersion expected_;
  std::optional<StreamVersion> actual_;
  bool soft_deleted_;
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
  // The stream the append was for.
  const std::string& stream() const { return stream_; }
  // Where the id is already stored.
  const std::string& stored_stream() const { return stored_stream_; }
  StreamVersion stored_version() const { return stored_version_; }

 private:
  Uuid id_;
  std::string stream_;
  std::string stored_stream_;
  StreamVersion stored_version_;
};

// The server could not be reached or the link broke. Transient unless the cause is permanent (a bad
// password, a database that does not exist).
class ConnectionError : public Error {
 public:
  explicit ConnectionError(const std::string& message, bool transient = true)
      : Error(ErrorCode::connection, message, transient) {}
};

// The engine failed: I/O, a full disk, corruption, missing permissions, a database busy for longer than
// the configured timeout (transient), a serialization failure (transient).
class StorageError : public Error {
 public:
  explicit StorageError(const std::string& message, bool transient = false)
      : Error(ErrorCode::storage, message, transient) {}
};

// open_store() or an engine's open found no store at the location and was told not to create one.
class StoreNotFound : public Error {
 public:
  explicit StoreNotFound(std::string location);
  const std::string& location() const { return location_; }

 private:
  std::string location_;
};

}  // namespace sourced
