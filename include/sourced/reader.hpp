#pragma once
// sourced::EventReader: a lazy, forward-only sequence of recorded events from a stream or from `$all`.
//
// The reader fetches events a page at a time, so memory stays flat however long the stream is. It is a
// single-threaded object: use it from one thread at a time (the store it came from may be shared).
//
//   auto reader = store->read_stream("account-42");
//   if (reader.state() == EventReader::State::stream_not_found) { ... }
//   for (const RecordedEvent& e : reader) { ... }
//
// Iterating a reader whose stream was not found throws StreamNotFound, so "no such stream" is never
// confused with "no events in this range".
//
// Lifetimes: a reader may outlive the store that made it; it keeps alive what it reads from. A stream
// reader keeps the view of the stream it started with: deleting the stream (soft or tombstone) after
// read_stream() returned does not cut it short, while events appended meanwhile are still seen by a
// forward read that has not reached them yet (tests/store/concurrency_test.cpp pins this).

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "sourced/event.hpp"

namespace sourced {

enum class Direction { forward, backward };

inline constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();

namespace detail {
// What an engine implements to serve a reader, and how it makes one: internal (src/store/page_source.hpp).
class PageSource;
struct ReaderSetup;
}  // namespace detail

class EventReader {
 public:
  enum class State { ok, stream_not_found };

  // Readers come from EventStore::read_stream() and read_all(); engines build them from a ReaderSetup.
  explicit EventReader(detail::ReaderSetup setup);
  EventReader(EventReader&&) noexcept;
  EventReader& operator=(EventReader&&) noexcept;
  ~EventReader();

  State state() const { return state_; }
  // Every event at or before this key (position for `$all`, version for a stream; at or after it when
  // reading backward) has been returned by next() or did not match the read's filter. A filtered read
  // of `$all` can thus report progress past the last event it returned: a subscriber whose filter
  // matches nothing still moves its checkpoint (KurrentDB's "checkpoint reached"). Before the first
  // page it is the key before the start (`from - 1`, or `from + 1` backward).
  std::uint64_t scanned_through() const;
  // The next event, or nullptr at the end. The event stays valid until the next call.
  const RecordedEvent* next();
  // Like next(), but fetches at most one page: nullptr then means either the end (at_end()) or a page
  // whose events all failed the filter (scanned_through() moved on; call again). What subscriptions use
  // to report progress while a filter skips a long run of events.
  const RecordedEvent* try_next();
  bool at_end() const;
  // Events of the current page not yet returned: what next() returns without reading from the store.
  std::size_t buffered() const { return page_.size() - index_; }
  // Reads what is left into a vector: convenient for short streams and tests.
  std::vector<RecordedEvent> to_vector();

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = RecordedEvent;
    using difference_type = std::ptrdiff_t;
    using pointer = const RecordedEvent*;
    using reference = const RecordedEvent&;

    iterator() = default;
    reference operator*() const { return *current_; }
    pointer operator->() const { return current_; }
    iterator& operator++() {
      current_ = reader_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& a, const iterator& b) { return a.current_ == b.current_; }

   private:
    friend class EventReader;
    iterator(EventReader* reader, const RecordedEvent* current) : reader_(reader), current_(current) {}
    EventReader* reader_ = nullptr;
    const RecordedEvent* current_ = nullptr;
  };
  iterator begin() { return iterator(this, next()); }
  iterator end() { return iterator(); }

 private:
  bool fill();

  std::shared_ptr<detail::PageSource> source_;
  std::string stream_;
  State state_;
  Direction direction_;
  std::uint64_t cursor_;
  std::uint64_t remaining_;
  bool key_is_position_;
  std::size_t page_size_;
  bool exhausted_ = false;
  std::vector<RecordedEvent> page_;
  std::size_t index_ = 0;
  std::uint64_t page_scanned_;   // how far the current page's fetch looked
  std::uint64_t last_returned_;  // key of the last event next() returned, or where the read starts
};

}  // namespace sourced
