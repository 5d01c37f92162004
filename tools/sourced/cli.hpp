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

// Puts the main heap on transparent huge pages (where the kernel offers them on request, Debian's default)
// and keeps freed memory for reuse. Why: in a VM a first touch of each 4 KiB page is a page fault costing
// ~10 µs, and an append from stdin touches its events' bytes several times over (the events, SQLite's page
// cache): 100,000 events took ~55,000 faults, about half of the command's time. A huge page faults once per
// 2 MiB, but zeroes all of it: a short command touching little memory gains nothing, so `append` calls this
// once it has read 64 KiB of input. Call while the process has one thread (it sets malloc options).
void use_huge_pages_for_heap();

int run(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace sourced::cli
