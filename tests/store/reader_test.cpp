// EventReader: pages are fetched lazily, only as far as the caller reads.

#include "sourced/reader.hpp"

#include <gtest/gtest.h>

#include "sourced/error.hpp"
#include "store/page_source.hpp"

namespace sourced {
namespace {

// A log of `size` events at positions 1..size, counting the pages asked for.
class CountingPages final : public detail::PageSource {
 public:
  explicit CountingPages(std::uint64_t size) : size_(size) {}
  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    ++fetches;
    out.clear();
    if (direction == Direction::forward) {
      for (std::uint64_t p = std::max<std::uint64_t>(from, 1); p <= size_ && out.size() < limit; ++p)
        out.push_back(at(p));
    } else {
      for (std::uint64_t p = std::min(from, size_); p >= 1 && out.size() < limit; --p) out.push_back(at(p));
    }
  }
  int fetches = 0;

 private:
  static RecordedEvent at(std::uint64_t p) {
    RecordedEvent e;
    e.position = Position(p);
    return e;
  }
  std::uint64_t size_;
};

EventReader reader(std::shared_ptr<CountingPages> pages, Direction d, std::uint64_t from, std::uint64_t max) {
  return EventReader({.source = pages,
                      .stream = "$all",
                      .direction = d,
                      .from = from,
                      .max_count = max,
                      .key = detail::ReadKey::position,
                      .page_size = 100});
}

TEST(EventReader, FetchesOnlyThePagesItReads) {
  auto pages = std::make_shared<CountingPages>(100000);
  auto r = reader(pages, Direction::forward, 1, kUnlimited);
  EXPECT_EQ(pages->fetches, 0) << "nothing is read before the first next()";
  for (int i = 0; i < 3; ++i) ASSERT_NE(r.next(), nullptr);
  EXPECT_EQ(pages->fetches, 1);
  for (int i = 0; i < 200; ++i) ASSERT_NE(r.next(), nullptr);
  EXPECT_EQ(pages->fetches, 3);
}

TEST(EventReader, StopsAtTheCountWithoutAnExtraFetch) {
  auto pages = std::make_shared<CountingPages>(1000);
  auto r = reader(pages, Direction::forward, 1, 250);
  std::uint64_t expect = 1;
  while (const RecordedEvent* e = r.next()) ASSERT_EQ(e->position.value(), expect++);
  EXPECT_EQ(expect, 251u);
  EXPECT_EQ(pages->fetches, 3);  // 100 + 100 + 50
}

TEST(EventReader, ReadsBackwardToTheStartWithoutRepeats) {
  auto pages = std::make_shared<CountingPages>(250);
  auto r = reader(pages, Direction::backward, kUnlimited, kUnlimited);
  std::uint64_t expect = 250;
  while (const RecordedEvent* e = r.next()) ASSERT_EQ(e->position.value(), expect--);
  EXPECT_EQ(expect, 0u);
}

TEST(EventReader, AMissingStreamThrowsWhenIterated) {
  EventReader r({.source = std::make_shared<CountingPages>(10),
                 .stream = "account-1",
                 .state = EventReader::State::stream_not_found,
                 .page_size = 100});
  EXPECT_EQ(r.state(), EventReader::State::stream_not_found);
  EXPECT_THROW(r.next(), StreamNotFound);
}

}  // namespace
}  // namespace sourced
