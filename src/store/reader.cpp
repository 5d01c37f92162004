#include "sourced/reader.hpp"

#include <algorithm>

#include "sourced/error.hpp"
#include "store/page_source.hpp"

namespace sourced {

EventReader::EventReader(detail::ReaderSetup setup)
    : source_(std::move(setup.source)),
      stream_(std::move(setup.stream)),
      state_(setup.state),
      direction_(setup.direction),
      cursor_(setup.from),
      remaining_(setup.max_count),
      key_is_position_(setup.key == detail::ReadKey::position),
      page_size_(std::max<std::size_t>(setup.page_size, 1)) {
  std::uint64_t from = setup.from;
  std::uint64_t before = direction_ == Direction::forward ? (from == 0 ? 0 : from - 1) : from + (from < kUnlimited);
  page_scanned_ = last_returned_ = before;
  if (remaining_ == 0 || !source_ || (direction_ == Direction::backward && cursor_ == 0)) exhausted_ = true;
}

EventReader::EventReader(EventReader&&) noexcept = default;
EventReader& EventReader::operator=(EventReader&&) noexcept = default;
EventReader::~EventReader() = default;

bool EventReader::fill() {
  if (exhausted_) return false;
  std::size_t limit = static_cast<std::size_t>(std::min<std::uint64_t>(page_size_, remaining_));
  source_->fetch(cursor_, direction_, limit, page_);
  index_ = 0;
  auto key_of = [&](const RecordedEvent& e) { return key_is_position_ ? e.position.value() : e.version.value(); };
  std::optional<detail::PageSource::Scan> scan = source_->last_scan();
  if (page_.size() > limit) {
    // A filtering source may examine more than `limit` events and return more matches than the read
    // wants: the read has then looked only as far as the last one it keeps.
    page_.resize(limit);
    if (scan) scan = detail::PageSource::Scan{key_of(page_.back()), false};
  }
  remaining_ -= page_.size();
  if (scan) {
    if (scan->reached_end || remaining_ == 0) exhausted_ = true;
    page_scanned_ = scan->last_key;
  } else {
    if (page_.size() < limit || remaining_ == 0) exhausted_ = true;
    if (!page_.empty()) page_scanned_ = key_of(page_.back());
  }
  std::uint64_t key = page_scanned_;
  if (direction_ == Direction::forward) {
    cursor_ = key + 1;
  } else {
    if (key <= 1) exhausted_ = true;
    cursor_ = key - 1;
  }
  return !page_.empty();
}

const RecordedEvent* EventReader::next() {
  if (state_ == State::stream_not_found) throw StreamNotFound(stream_);
  // A filtering source may return an empty page that is not the end: it looked at events that all failed
  // the filter.
  while (index_ >= page_.size()) {
    if (!fill() && exhausted_) return nullptr;
  }
  const RecordedEvent& e = page_[index_++];
  last_returned_ = key_is_position_ ? e.position.value() : e.version.value();
  return &e;
}

const RecordedEvent* EventReader::try_next() {
  if (state_ == State::stream_not_found) throw StreamNotFound(stream_);
  if (index_ >= page_.size() && !fill()) return nullptr;
  const RecordedEvent& e = page_[index_++];
  last_returned_ = key_is_position_ ? e.position.value() : e.version.value();
  return &e;
}

bool EventReader::at_end() const { return exhausted_ && index_ >= page_.size(); }

std::uint64_t EventReader::scanned_through() const { return index_ < page_.size() ? last_returned_ : page_scanned_; }

std::vector<RecordedEvent> EventReader::to_vector() {
  std::vector<RecordedEvent> out;
  while (const RecordedEvent* e = next()) out.push_back(*e);
  return out;
}

}  // namespace sourced
