#pragma once
// The commands of the `sourced` tool, one function each, and what they share. run() (cli.cpp) parses the
// command line into Options and calls one of them; every user-input check happens before a store is
// opened, so bad input never creates, migrates or changes a store. Used by one thread.

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sourced/store.hpp"

namespace sourced::cli {

// Input the user got wrong, reported with exit code 2 before the store is touched.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// stdout could not be written (a closed pipe, a full disk).
struct OutputError : std::runtime_error {
  OutputError() : std::runtime_error("could not write the output") {}
};

// What the command line said. Each std::optional is empty when the option was not given.
struct Options {
  std::string store = "./sourced.db";
  std::string stream;
  // append
  std::optional<std::string> type, data, metadata, id, correlation_id, causation_id;
  std::string expected = "any";
  // read
  std::optional<std::string> from, count;
  bool backward = false;
  bool follow = false;
  std::string format = "json";
  std::string category;
  std::vector<std::string> types;
  // delete
  bool tombstone = false;
  // subscription ... (the filters are `category` and `types`, the first key `from`, the count `count`)
  std::string subscription;
  std::string source_stream;
  std::optional<std::string> max_in_flight, max_attempts, exec;
  bool wait = false;
  // projections: the read-model database (default: the store's)
  std::optional<std::string> models;
};

struct Io {
  std::istream& in;
  std::ostream& out;
  std::ostream& err;
};

int append_command(const Options& o, Io& io);
int read_command(const Options& o, Io& io);
int streams_command(const Options& o, Io& io);
int info_command(const Options& o, Io& io);
int delete_command(const Options& o, Io& io);
int stats_command(const Options& o, Io& io);
int init_command(const Options& o, Io& io);
int subscription_create_command(const Options& o, Io& io);
int subscription_delete_command(const Options& o, Io& io);
int subscription_info_command(const Options& o, Io& io);
int subscription_parked_command(const Options& o, Io& io);
int subscription_replay_command(const Options& o, Io& io);
int subscription_consume_command(const Options& o, Io& io);
int subscriptions_command(const Options& o, Io& io);
int projections_command(const Options& o, Io& io);  // projection_commands.cpp

// Appends the JSON line `sourced read` prints for `e` (read_command.cpp).
void append_event_json(std::string& out, const RecordedEvent& e);

// Opening stores (store_access.cpp).
// For a command that writes: refuses "memory:" (its events would vanish when the command exits).
std::unique_ptr<EventStore> open_for_writing(const std::string& location, std::string_view command);
// For a command that only reads: never creates, migrates or changes anything. nullptr when the store does
// not exist (a missing SQLite file, a PostgreSQL database without the schema), which reads as empty.
std::unique_ptr<EventStore> open_for_reading(const std::string& location);
// The engine a location names ("sqlite", "postgres" or "memory"), for a store that does not exist.
std::string engine_of(const std::string& location);
// The SQLite file a location names, or nullopt for another engine.
std::optional<std::string> sqlite_file_of(const std::string& location);
// `message` with any password of `location` replaced by "***", so no secret reaches a log.
std::string redact(std::string message, const std::string& location);

// Writes to an ostream through one large buffer; a failed write throws OutputError.
class Output {
 public:
  explicit Output(std::ostream& out);
  std::string& buffer() { return buffer_; }
  // Writes the buffer once it is large; call after each line.
  void line_done() {
    if (buffer_.size() >= kFlushBytes) write();
  }
  // Writes what is buffered and flushes the stream.
  void flush();

 private:
  // Large enough that writes are few (a pipe takes 64 KiB at a time anyway), small enough that its pages,
  // each a page fault on first touch (~10 us in a VM), cost little: 1 MiB made `read` 2-3 ms slower.
  static constexpr std::size_t kFlushBytes = 256 << 10;
  void write();
  std::ostream& out_;
  std::string buffer_;
};

// Parsers for the command line's values; they throw UsageError naming the option.
ExpectedVersion parse_expected(const std::string& text);
Uuid parse_uuid(const std::string& text, std::string_view what);
std::uint64_t parse_count(const std::string& text, std::string_view what);

}  // namespace sourced::cli
