#pragma once
// The `sourced` command-line tool, as a function so tests can run it in-process or as a binary.

#include <iosfwd>

namespace sourced::cli {

// Exit codes, documented in `sourced --help` and the README.
enum ExitCode : int {
  kOk = 0,
  kFailure = 1,               // anything else: I/O, server down, corruption
  kUsage = 2,                 // usage error or invalid input: bad JSON, stream id, UUID, option
  kWrongVersion = 3,          // the expected version did not match
  kStreamNotFound = 4,        // no such stream (or it was soft-deleted)
  kStreamDeleted = 5,         // the stream was tombstoned
  kDuplicateEventId = 6,      // an event id of the append is already stored at another place
  kOutputLost = 7,            // the append committed, but its result could not go to stdout (it went to stderr)
  kSubscriptionNotFound = 8,  // no persistent subscription of that name
  kSubscriptionExists = 9,    // a persistent subscription of that name exists already
  kSubscriptionHeld = 10,     // another consumer holds the persistent subscription (consume without --wait)
};

int run(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace sourced::cli
