#pragma once
// Commands: what a caller asks the domain to do, and what comes back.
//
// A command is any value type. It may say which stream it targets (`std::string stream() const`) and
// check itself before anything is loaded (`std::optional<FieldError> validate() const`):
//
//   struct Withdraw {
//     std::string account;
//     long amount = 0;
//     std::string stream() const { return "account-" + account; }
//     std::optional<FieldError> validate() const {
//       if (amount <= 0) return FieldError{"amount", "must be positive"};
//       return std::nullopt;
//     }
//   };
//
// Value types; safe to copy and share between threads.

#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sourced/decider.hpp"
#include "sourced/error.hpp"
#include "sourced/event.hpp"
#include "sourced/uuid.hpp"

namespace sourced {

// Which field of a command is invalid, and why.
struct FieldError {
  std::string field;
  std::string message;
};

// A command failed its own validation: nothing was loaded or written.
class InvalidCommand : public InvalidArgument {
 public:
  InvalidCommand(std::string command_type, FieldError error);
  const std::string& command_type() const { return command_type_; }
  const std::string& field() const { return error_.field; }
  const std::string& reason() const { return error_.message; }

 private:
  std::string command_type_;
  FieldError error_;
};

template <class C>
concept TargetsStream = requires(const C& c) {
  { c.stream() } -> std::convertible_to<std::string>;
};

template <class C>
concept SelfValidating = requires(const C& c) {
  { c.validate() } -> std::convertible_to<std::optional<FieldError>>;
};

// The identity of one dispatch of a command. With a command id the command is idempotent: the ids of
// the events it writes derive from it (command_event_id), so the same command id is written once however
// often it is handled, by this process or another after a restart.
struct CommandMeta {
  // Empty: a fresh one (UUIDv7) per dispatch, so repeating the call is a new command.
  std::optional<Uuid> command_id;
  // The conversation the command belongs to; stamped on every event it writes. Empty: the command id
  // (the command starts a conversation).
  std::optional<Uuid> correlation_id;
  // What caused the command (an event, another command); the events' causation id is the command id.
  std::optional<Uuid> causation_id;
};

// What handling a command did.
struct CommandResult {
  // Set when the domain refused the command; nothing was written.
  std::optional<Rejection> rejection;
  // The stream's version after the command: the last event it wrote, or the version the command was
  // decided on when it wrote nothing.
  StreamVersion stream_version;
  // The `$all` position of the last event written (0 when nothing was written): wait for a read model to
  // reach it to read your own writes.
  Position position;
  // Events the command wrote (the first time, for a repeat).
  std::uint64_t events_written = 0;
  // True when the command id had been handled before: nothing was written now, and the versions and
  // position are those of the first time.
  bool repeated = false;
  // How many times the command was decided: 1, plus one per reload after a concurrent write.
  int attempts = 1;
  // The ids of the dispatch (command id filled in when it was generated).
  Uuid command_id;
  Uuid correlation_id;
  // Read-your-writes (DispatchOptions::wait_for): the projections that had not processed `position`
  // when the bus stopped waiting (timeout, runner stopped, unknown to the waiter). The command succeeded
  // and its events stay written either way; empty when every projection asked for reached it.
  std::vector<std::string> projections_behind;
  // What the middleware after() hooks that threw said (innermost first). The command succeeded: its
  // events are written, so a failing hook is reported here instead of thrown, where a retry of a command
  // without an id would write it again.
  std::vector<std::string> middleware_errors;

  bool rejected() const { return rejection.has_value(); }
  // True when every projection the dispatch waited for has processed what the command wrote.
  bool projections_caught_up() const { return projections_behind.empty(); }
};

// The id of the `index`-th event a command writes: a name-based UUID of the command id, so repeating the
// command repeats its ids and the store writes it once. When the command id is time-ordered (v7), its
// timestamp is kept in front (a version 8 id), so the store's id index still grows at its right edge.
Uuid command_event_id(const Uuid& command_id, std::uint64_t index);

}  // namespace sourced
