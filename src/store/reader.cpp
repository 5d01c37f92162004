#include "sourced/reader.hpp"

#include <algorithm>

#include "sourced/error.hpp"

namespace sourced {

EventReader::EventReader(std::shared_ptr<detail::PageSource> source, std::string stream, State state,
                         Direction direction, std::uint64_t from, std::uint64_t max_count, bool key_is_position,
                         std::size_t page_size)
    : source_(std::move(source)),
      stream_(std::move(stream)),
      state_(state),
      direction_(direction),
      cursor_(from),
      remaining_(max_count),
      key_is_position_(key_is_position),
      page_size_(std::max<std::size_t>(page_size, 1)) {
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
  if (page_.size() > limit) page_.resize(limit);
  remaining_ -= page_.size();
  if (page_.size() < limit || remaining_ == 0) exhausted_ = true;
  if (!page_.empty()) {
    const RecordedEvent& last = page_.back();
    std::uint64_t key = key_is_position_ ? last.position.value() : last.version.value();
    if (direction_ == Direction::forward) {
      cursor_ = key + 1;
    } else {
      if (key <= 1) exhausted_ = true;
      cursor_ = key - 1;
    }
  }
  return !page_.empty();
}

const RecordedEvent* EventReader::next() {
  if (state_ == State::stream_not_found) throw StreamNotFound(stream_);
  if (index_ >= page_.size() && !fill()) return nullptr;
  return &page_[index_++];
}

std::vector<RecordedEvent> EventReader::to_vector() {
  std::vector<RecordedEvent> out;
  while (const RecordedEvent* e = next()) out.push_back(*e);
  return out;
}

}  // namespace sourced
