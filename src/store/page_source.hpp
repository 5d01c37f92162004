#pragma once
// What an engine implements to serve an EventReader (a PageSource: one page of events at a time), and the
// setup an engine gives the reader. Internal to the store layer and the engines.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sourced/reader.hpp"

namespace sourced::detail {

// What an engine implements to serve a reader: one page of events at a time.
class PageSource {
 public:
  virtual ~PageSource() = default;
  // Puts into `out` (cleared first) up to `limit` events whose key (version for a stream, position for
  // `$all`) is >= `from` when reading forward, or <= `from` when reading backward, in that order. Fewer
  // than `limit` events means the end was reached.
  virtual void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) = 0;

  // How far the last fetch looked. A source that returns every event it examines needs nothing here;
  // one that filters examines up to `limit` events and returns only those that match, so it says which
  // key it examined last (`from - 1` forward, or `from + 1` backward, when it examined none) and whether
  // it reached the end of what is stored.
  struct Scan {
    std::uint64_t last_key = 0;
    bool reached_end = false;
  };
  virtual std::optional<Scan> last_scan() const { return std::nullopt; }
};

// What a reader reads by: a version within one stream, or a position in `$all`.
enum class ReadKey { version, position };

struct ReaderSetup {
  std::shared_ptr<PageSource> source;
  std::string stream;  // the stream's id, or "$all"
  EventReader::State state = EventReader::State::ok;
  Direction direction = Direction::forward;
  std::uint64_t from = 1;  // the first key to read (inclusive)
  std::uint64_t max_count = kUnlimited;
  ReadKey key = ReadKey::version;
  std::size_t page_size = 1024;
};

}  // namespace sourced::detail
