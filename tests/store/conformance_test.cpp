// The contract every engine honours (../ARCHITECTURE "Semantics every engine must honour"), run against
// each engine in tests/store/engines.hpp.

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <stop_token>
#include <thread>

#include <gtest/gtest.h>

#include "sourced/serializer.hpp"
#include "store/append_rules.hpp"
#include "store/engines.hpp"

namespace sourced::testing {
namespace {

class Conformance : public ::testing::TestWithParam<EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    store_ = harness_->open();
  }
  EventStore& store() { return *store_; }

  std::vector<RecordedEvent> read(std::string_view stream, ReadStreamOptions o = {}) {
    return store().read_stream(stream, o).to_vector();
  }
  std::vector<RecordedEvent> read_all(ReadAllOptions o = {}) { return store().read_all(o).to_vector(); }
  static std::vector<std::uint64_t> versions(const std::vector<RecordedEvent>& es) {
    std::vector<std::uint64_t> v;
    for (const auto& e : es) v.push_back(e.version.value());
    return v;
  }
  static std::vector<std::uint64_t> positions(const std::vector<RecordedEvent>& es) {
    std::vector<std::uint64_t> v;
    for (const auto& e : es) v.push_back(e.position.value());
    return v;
  }
  void append_n(std::string_view stream, int n, const std::string& type = "Happened") {
    std::vector<EventData> batch;
    for (int i = 0; i < n; ++i) batch.push_back(event(type, "{\"i\":" + std::to_string(i) + "}"));
    store().append(stream, ExpectedVersion::any(), batch);
  }

  std::unique_ptr<EngineHarness> harness_;
  std::unique_ptr<EventStore> store_;
};

using V = std::vector<std::uint64_t>;

std::string fmt_filter(const EventFilter& f) {
  std::string s = "filter";
  if (f.category) s += " category=" + *f.category;
  if (f.stream_prefix) s += " prefix=" + *f.stream_prefix;
  for (const auto& t : f.event_types) s += " type=" + t;
  return s;
}

TEST_P(Conformance, FirstAppendStartsAtVersionOneAndPositionOne) {
  auto r = store().append("account-1", ExpectedVersion::no_stream(), {event("Opened"), event("Deposited")});
  EXPECT_EQ(r.first_version, StreamVersion(1));
  EXPECT_EQ(r.last_version, StreamVersion(2));
  EXPECT_EQ(r.first_position, Position(1));
  EXPECT_EQ(r.last_position, Position(2));
  EXPECT_FALSE(r.replayed);
  auto r2 = store().append("account-2", ExpectedVersion::no_stream(), {event("Opened")});
  EXPECT_EQ(r2.first_version, StreamVersion(1));
  EXPECT_EQ(r2.first_position, Position(3));
  EXPECT_EQ(store().head_position(), Position(3));
}

TEST_P(Conformance, ReadBackKeepsEveryField) {
  EventData e;
  e.type = "Deposited";
  e.data = std::string("{\"amount\":10}\0binary\xff", 21);
  e.metadata = R"({"user":"ada"})";
  e.id = Uuid::v4();
  e.correlation_id = Uuid::v4();
  e.causation_id = Uuid::v7();
  auto before = now();
  store().append("account-1", ExpectedVersion::any(), {e, event("Plain", "", "")});
  auto after = now();
  auto events = read("account-1");
  ASSERT_EQ(events.size(), 2u);
  const auto& got = events[0];
  EXPECT_EQ(got.id, *e.id);
  EXPECT_EQ(got.stream, "account-1");
  EXPECT_EQ(got.version, StreamVersion(1));
  EXPECT_EQ(got.position, Position(1));
  EXPECT_EQ(got.type, "Deposited");
  EXPECT_EQ(got.data, e.data);
  EXPECT_EQ(got.metadata, e.metadata);
  EXPECT_EQ(got.correlation_id, e.correlation_id);
  EXPECT_EQ(got.causation_id, e.causation_id);
  EXPECT_GE(got.created_at, before - std::chrono::seconds(1));
  EXPECT_LE(got.created_at, after + std::chrono::seconds(1));
  EXPECT_EQ(events[1].data, "");
  EXPECT_FALSE(events[1].correlation_id);
  EXPECT_FALSE(events[1].id.is_nil()) << "the store generates an id when none is given";
  EXPECT_EQ(events[1].id.version(), 7);
}

TEST_P(Conformance, ContentTypeIsStoredWithEachEventAndReadBackOnEveryPath) {
  auto typed = [](ContentType ct) {
    EventData e = event("T", ct == ContentType::binary ? std::string("\x01\xff", 2) : "{}");
    e.content_type = ct;
    return e;
  };
  store().append("ct-1", ExpectedVersion::any(),
                 {typed(ContentType::json), typed(ContentType::binary), typed(ContentType::unknown)});
  store().append("ct-2", ExpectedVersion::any(), {to_event_data("Typed", std::map<std::string, int>{{"a", 1}})});
  using CT = std::vector<ContentType>;
  auto types = [](const std::vector<RecordedEvent>& es) {
    CT v;
    for (const auto& e : es) v.push_back(e.content_type);
    return v;
  };
  CT want = {ContentType::json, ContentType::binary, ContentType::unknown};
  EXPECT_EQ(types(read("ct-1")), want);
  ReadStreamOptions back;
  back.direction = Direction::backward;
  EXPECT_EQ(types(read("ct-1", back)), (CT{ContentType::unknown, ContentType::binary, ContentType::json}));
  EXPECT_EQ(types(read_all()), (CT{ContentType::json, ContentType::binary, ContentType::unknown, ContentType::json}))
      << "to_event_data with JsonSerializer marks its events json";
  ReadAllOptions filtered;
  filtered.filter = EventFilter{.event_types = {"T"}};
  EXPECT_EQ(types(read_all(filtered)), want);
}

TEST_P(Conformance, ExpectedVersionAnyAlwaysAppends) {
  store().append("s", ExpectedVersion::any(), {event("A")});
  auto r = store().append("s", ExpectedVersion::any(), {event("B")});
  EXPECT_EQ(r.last_version, StreamVersion(2));
}

TEST_P(Conformance, ExpectedNoStreamFailsWhenTheStreamHasEvents) {
  store().append("s", ExpectedVersion::no_stream(), {event("A")});
  try {
    store().append("s", ExpectedVersion::no_stream(), {event("B")});
    FAIL() << "expected WrongExpectedVersion";
  } catch (const WrongExpectedVersion& e) {
    EXPECT_EQ(e.stream(), "s");
    EXPECT_EQ(e.expected(), ExpectedVersion::no_stream());
    EXPECT_EQ(e.actual(), StreamVersion(1));
  }
  EXPECT_EQ(store().head_position(), Position(1));
}

TEST_P(Conformance, ExpectedStreamExistsFailsOnAMissingStream) {
  try {
    store().append("s", ExpectedVersion::stream_exists(), {event("A")});
    FAIL() << "expected WrongExpectedVersion";
  } catch (const WrongExpectedVersion& e) {
    EXPECT_EQ(e.actual(), std::nullopt);
  }
  store().append("s", ExpectedVersion::no_stream(), {event("A")});
  EXPECT_EQ(store().append("s", ExpectedVersion::stream_exists(), {event("B")}).last_version, StreamVersion(2));
}

TEST_P(Conformance, ExpectedExactVersionMustMatchTheLastVersion) {
  store().append("s", ExpectedVersion::exact(0), {event("A"), event("B")});
  for (std::uint64_t wrong : {0, 1, 3}) {
    try {
      store().append("s", ExpectedVersion::exact(wrong), {event("C")});
      FAIL() << "expected WrongExpectedVersion for " << wrong;
    } catch (const WrongExpectedVersion& e) {
      EXPECT_EQ(e.expected(), ExpectedVersion::exact(wrong));
      EXPECT_EQ(e.actual(), StreamVersion(2));
      EXPECT_NE(std::string(e.what()).find("expected version " + std::to_string(wrong)), std::string::npos);
    }
  }
  EXPECT_EQ(store().append("s", ExpectedVersion::exact(2), {event("C")}).last_version, StreamVersion(3));
  EXPECT_EQ(versions(read("s")), (V{1, 2, 3}));
}

TEST_P(Conformance, AFailedAppendWritesNothing) {
  store().append("s", ExpectedVersion::any(), {event("A")});
  EXPECT_THROW(store().append("s", ExpectedVersion::exact(5), {event("B"), event("C")}), WrongExpectedVersion);
  EXPECT_THROW(store().append("s", ExpectedVersion::any(), {event("B"), event("")}), InvalidArgument);
  auto id = Uuid::v4();
  EXPECT_THROW(store().append("s", ExpectedVersion::any(), {event_with_id("B", id), event_with_id("C", id)}),
               InvalidArgument);
  EXPECT_EQ(store().head_position(), Position(1));
  EXPECT_EQ(versions(read("s")), (V{1}));
  EXPECT_EQ(store().stream_info("s")->last_version, StreamVersion(1));
}

TEST_P(Conformance, EventsOfOneAppendAreContiguousInTheStreamAndInAll) {
  std::vector<EventData> batch(50, event("E"));
  auto r = store().append("s", ExpectedVersion::any(), batch);
  EXPECT_EQ(r.last_position.value() - r.first_position.value(), 49u);
  auto all = read_all();
  ASSERT_EQ(all.size(), 50u);
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].position.value(), i + 1);
    EXPECT_EQ(all[i].version.value(), i + 1);
  }
}

TEST_P(Conformance, EmptyAppendOnlyChecksTheExpectedVersion) {
  auto r = store().append("s", ExpectedVersion::no_stream(), std::vector<EventData>{});
  EXPECT_EQ(r.last_version, StreamVersion(0));
  EXPECT_EQ(store().head_position(), Position(0));
  store().append("s", ExpectedVersion::any(), {event("A")});
  EXPECT_THROW(store().append("s", ExpectedVersion::exact(0), std::vector<EventData>{}), WrongExpectedVersion);
  EXPECT_EQ(store().append("s", ExpectedVersion::exact(1), std::vector<EventData>{}).last_version, StreamVersion(1));
}

TEST_P(Conformance, RepeatingAnAppendWithTheSameIdsReturnsTheFirstResult) {
  std::vector<EventData> batch = {event_with_id("A", Uuid::v4()), event_with_id("B", Uuid::v4())};
  store().append("other", ExpectedVersion::any(), {event("X")});
  auto first = store().append("s", ExpectedVersion::no_stream(), batch);
  auto again = store().append("s", ExpectedVersion::no_stream(), batch);
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.first_version, first.first_version);
  EXPECT_EQ(again.last_version, first.last_version);
  EXPECT_EQ(again.first_position, first.first_position);
  EXPECT_EQ(again.last_position, first.last_position);
  EXPECT_TRUE(store().append("s", ExpectedVersion::any(), batch).replayed);
  EXPECT_TRUE(store().append("s", ExpectedVersion::exact(0), batch).replayed);
  store().append("s", ExpectedVersion::exact(2), {event("C")});
  EXPECT_TRUE(store().append("s", ExpectedVersion::no_stream(), batch).replayed) << "still the same append";
  EXPECT_EQ(store().head_position(), Position(4));
  EXPECT_EQ(versions(read("s")), (V{1, 2, 3}));
}

TEST_P(Conformance, ConcurrentRepeatsOfOneAppendWriteItOnce) {
  std::vector<EventData> batch = {event_with_id("A", Uuid::v4()), event_with_id("B", Uuid::v4())};
  constexpr int kThreads = 8;
  std::vector<AppendResult> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { results[t] = store().append("once", ExpectedVersion::any(), batch); });
  }
  for (auto& th : threads) th.join();
  int written = 0;
  for (const auto& r : results) {
    written += r.replayed ? 0 : 1;
    EXPECT_EQ(r.first_position, results[0].first_position);
    EXPECT_EQ(r.last_version, StreamVersion(2));
  }
  EXPECT_EQ(written, 1);
  EXPECT_EQ(store().head_position(), Position(2));
}

TEST_P(Conformance, ConcurrentAppendsOfOneIdToDifferentStreamsLetOneWin) {
  auto id = Uuid::v4();
  constexpr int kThreads = 8;
  std::atomic<int> wins{0}, duplicates{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        store().append("claim-" + std::to_string(t), ExpectedVersion::any(), {event_with_id("A", id)});
        ++wins;
      } catch (const DuplicateEventId&) {
        ++duplicates;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(duplicates.load(), kThreads - 1);
  EXPECT_EQ(store().head_position(), Position(1));
}

TEST_P(Conformance, ANoStreamRepeatMustMatchWhereTheAppendWasWritten) {
  append_n("s", 1);
  std::vector<EventData> batch = {event_with_id("A", Uuid::v4())};
  store().append("s", ExpectedVersion::exact(1), batch);  // written at version 2, after a visible event
  store().delete_stream("s", ExpectedVersion::any(), DeleteMode::soft);
  // The stream has no visible event now, but the batch was not written to an empty stream.
  EXPECT_THROW(store().append("s", ExpectedVersion::no_stream(), batch), DuplicateEventId);
  EXPECT_EQ(store().head_position(), Position(2));
}

TEST_P(Conformance, ReusingAnEventIdElsewhereIsAnError) {
  auto id = Uuid::v4();
  store().append("s", ExpectedVersion::any(), {event_with_id("A", id)});
  try {
    store().append("t", ExpectedVersion::any(), {event_with_id("A", id)});
    FAIL() << "expected DuplicateEventId";
  } catch (const DuplicateEventId& e) {
    EXPECT_EQ(e.id(), id);
    EXPECT_EQ(e.stream(), "t");
    EXPECT_EQ(e.stored_stream(), "s");
    EXPECT_EQ(e.stored_version(), StreamVersion(1));
    EXPECT_FALSE(e.transient());
    EXPECT_NE(std::string(e.what()).find("'s'"), std::string::npos) << e.what();
  }
  // A batch that repeats only part of an earlier append is neither new nor a repeat.
  EXPECT_THROW(store().append("s", ExpectedVersion::any(), {event_with_id("A", id), event("B")}), DuplicateEventId);
  EXPECT_THROW(store().append("s", ExpectedVersion::any(), {event("B"), event_with_id("A", id)}), DuplicateEventId);
  // The same ids, expected at another place in the stream: a new append that reuses an id.
  store().append("s", ExpectedVersion::any(), {event("B")});
  EXPECT_THROW(store().append("s", ExpectedVersion::exact(2), {event_with_id("A", id)}), DuplicateEventId);
  // ... unless the stream is not where the writer expects either.
  EXPECT_THROW(store().append("s", ExpectedVersion::exact(5), {event_with_id("A", id)}), WrongExpectedVersion);
  EXPECT_EQ(store().head_position(), Position(2));
}

TEST_P(Conformance, TheExpectedVersionIsCheckedBeforeReusedEventIds) {
  // The stream is at version 2 and event A at version 1: whatever part of A's append is repeated, a wrong
  // expected version is the one error reported; a reused id is reported only when the stream is as expected.
  auto a = Uuid::v4();
  store().append("s", ExpectedVersion::any(), {event_with_id("A", a), event("X")});
  EXPECT_THROW(store().append("s", ExpectedVersion::exact(5), {event_with_id("A", a)}), WrongExpectedVersion);
  EXPECT_THROW(store().append("s", ExpectedVersion::exact(5), {event_with_id("A", a), event("B")}),
               WrongExpectedVersion);
  EXPECT_THROW(store().append("s", ExpectedVersion::exact(5), {event("B"), event_with_id("A", a)}),
               WrongExpectedVersion);
  EXPECT_THROW(store().append("s", ExpectedVersion::no_stream(), {event_with_id("A", a), event("B")}),
               WrongExpectedVersion);
  EXPECT_THROW(store().append("t", ExpectedVersion::stream_exists(), {event_with_id("A", a)}), WrongExpectedVersion);
  EXPECT_THROW(store().append("s", ExpectedVersion::exact(2), {event_with_id("A", a), event("B")}), DuplicateEventId);
  EXPECT_THROW(store().append("t", ExpectedVersion::no_stream(), {event_with_id("A", a)}), DuplicateEventId);
  EXPECT_EQ(store().head_position(), Position(2));
}

TEST_P(Conformance, ReadsAStreamForwardAndBackwardFromAVersionWithACount) {
  append_n("s", 10);
  append_n("other", 3);
  EXPECT_EQ(versions(read("s")), (V{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(versions(read("s", {.from = StreamVersion(4), .max_count = 3})), (V{4, 5, 6}));
  EXPECT_EQ(versions(read("s", {.direction = Direction::backward, .max_count = 3})), (V{10, 9, 8}));
  EXPECT_EQ(versions(read("s", {.direction = Direction::backward, .from = StreamVersion(2)})), (V{2, 1}));
  EXPECT_EQ(versions(read("s", {.direction = Direction::backward, .from = StreamVersion(50), .max_count = 2})),
            (V{10, 9}));
  EXPECT_EQ(versions(read("s", {.from = StreamVersion(0), .max_count = 1})), (V{1}));
  EXPECT_EQ(read("s", {.max_count = 0}).size(), 0u);
}

TEST_P(Conformance, ReadingPastTheEndIsAnEmptyRangeNotAMissingStream) {
  append_n("s", 3);
  auto reader = store().read_stream("s", {.from = StreamVersion(10)});
  EXPECT_EQ(reader.state(), EventReader::State::ok);
  EXPECT_EQ(reader.next(), nullptr);
}

TEST_P(Conformance, ReadingAMissingStreamSaysSo) {
  append_n("s", 1);
  auto reader = store().read_stream("missing");
  EXPECT_EQ(reader.state(), EventReader::State::stream_not_found);
  EXPECT_THROW(reader.next(), StreamNotFound);
  EXPECT_FALSE(store().stream_info("missing"));
}

TEST_P(Conformance, ReadsAllForwardAndBackwardFromAPositionWithACount) {
  for (int i = 0; i < 5; ++i) {
    append_n("a-" + std::to_string(i), 2);
  }
  auto all = read_all();
  ASSERT_EQ(all.size(), 10u);
  EXPECT_EQ(positions(all), (V{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(all[2].stream, "a-1");
  EXPECT_EQ(all[2].version, StreamVersion(1));
  EXPECT_EQ(positions(read_all({.from = Position(8)})), (V{8, 9, 10}));
  EXPECT_EQ(positions(read_all({.from = Position(3), .max_count = 2})), (V{3, 4}));
  EXPECT_EQ(positions(read_all({.direction = Direction::backward, .max_count = 3})), (V{10, 9, 8}));
  EXPECT_EQ(positions(read_all({.direction = Direction::backward, .from = Position(2)})), (V{2, 1}));
  EXPECT_EQ(read_all({.from = Position(11)}).size(), 0u);
}

TEST_P(Conformance, LongReadsArePagedInOrder) {
  constexpr int kEvents = 5000;
  std::vector<EventData> batch;
  for (int i = 0; i < kEvents / 2; ++i) batch.push_back(event("E"));
  store().append("long", ExpectedVersion::any(), batch);
  store().append("long", ExpectedVersion::any(), batch);
  std::uint64_t expect = 1;
  for (const auto& e : store().read_stream("long")) ASSERT_EQ(e.version.value(), expect++);
  EXPECT_EQ(expect, kEvents + 1u);
  expect = kEvents;
  for (const auto& e : store().read_all({.direction = Direction::backward})) ASSERT_EQ(e.position.value(), expect--);
  EXPECT_EQ(expect, 0u);
  EXPECT_EQ(read("long", {.from = StreamVersion(1500), .max_count = 2100}).back().version, StreamVersion(3599));
}

TEST_P(Conformance, SoftDeleteHidesTheStreamAndLetsItContinue) {
  append_n("s", 3);
  append_n("t", 1);
  store().delete_stream("s", ExpectedVersion::exact(3), DeleteMode::soft);
  EXPECT_EQ(store().read_stream("s").state(), EventReader::State::stream_not_found);
  auto info = store().stream_info("s");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->status, StreamStatus::soft_deleted);
  EXPECT_EQ(info->last_version, StreamVersion(3));
  EXPECT_EQ(info->event_count, 0u);
  EXPECT_EQ(read_all().size(), 4u) << "events stay in $all";
  EXPECT_THROW(store().append("s", ExpectedVersion::stream_exists(), {event("X")}), WrongExpectedVersion);
  auto r = store().append("s", ExpectedVersion::no_stream(), {event("Again")});
  EXPECT_EQ(r.first_version, StreamVersion(4)) << "versions continue after a soft delete";
  auto events = read("s");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, "Again");
  EXPECT_EQ(versions(read("s", {.direction = Direction::backward})), (V{4}));
  EXPECT_EQ(store().stream_info("s")->status, StreamStatus::active);
  EXPECT_EQ(store().stream_info("s")->event_count, 1u);
}

TEST_P(Conformance, RepeatingTheFirstAppendAfterASoftDeleteIsARepeat) {
  append_n("s", 3);
  store().delete_stream("s", ExpectedVersion::any(), DeleteMode::soft);
  std::vector<EventData> batch = {event_with_id("A", Uuid::v4()), event_with_id("B", Uuid::v4())};
  auto first = store().append("s", ExpectedVersion::no_stream(), batch);
  EXPECT_EQ(first.first_version, StreamVersion(4));
  auto again = store().append("s", ExpectedVersion::no_stream(), batch);
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.first_position, first.first_position);
  EXPECT_EQ(store().head_position(), Position(5));
}

TEST_P(Conformance, ASoftDeletedStreamAcceptsItsLastVersionAsExpected) {
  append_n("s", 2);
  store().delete_stream("s", ExpectedVersion::any(), DeleteMode::soft);
  try {
    store().append("s", ExpectedVersion::exact(1), {event("X")});
    FAIL();
  } catch (const WrongExpectedVersion& e) {
    EXPECT_NE(std::string(e.what()).find("soft-deleted"), std::string::npos) << e.what();
    EXPECT_TRUE(e.soft_deleted());
    EXPECT_EQ(e.actual(), StreamVersion(2));
    EXPECT_FALSE(e.transient());
  }
  EXPECT_EQ(store().append("s", ExpectedVersion::exact(2), {event("X")}).last_version, StreamVersion(3));
}

TEST_P(Conformance, TombstoneForbidsEveryLaterReadAndWrite) {
  append_n("s", 2);
  store().delete_stream("s", ExpectedVersion::any(), DeleteMode::tombstone);
  EXPECT_THROW(store().read_stream("s"), StreamDeleted);
  EXPECT_THROW(store().append("s", ExpectedVersion::any(), {event("X")}), StreamDeleted);
  EXPECT_THROW(store().append("s", ExpectedVersion::no_stream(), {event("X")}), StreamDeleted);
  EXPECT_THROW(store().delete_stream("s", ExpectedVersion::any(), DeleteMode::soft), StreamDeleted);
  EXPECT_THROW(store().delete_stream("s", ExpectedVersion::any(), DeleteMode::tombstone), StreamDeleted);
  EXPECT_EQ(store().stream_info("s")->status, StreamStatus::tombstoned);
  EXPECT_EQ(read_all().size(), 2u) << "events stay in $all";
}

TEST_P(Conformance, TombstoningANeverWrittenStreamReservesTheName) {
  store().delete_stream("ghost", ExpectedVersion::no_stream(), DeleteMode::tombstone);
  EXPECT_THROW(store().append("ghost", ExpectedVersion::any(), {event("X")}), StreamDeleted);
  EXPECT_EQ(store().stream_info("ghost")->status, StreamStatus::tombstoned);
}

TEST_P(Conformance, DeleteChecksTheExpectedVersionAndThatTheStreamExists) {
  append_n("s", 2);
  EXPECT_THROW(store().delete_stream("s", ExpectedVersion::exact(1), DeleteMode::soft), WrongExpectedVersion);
  EXPECT_THROW(store().delete_stream("s", ExpectedVersion::exact(1), DeleteMode::tombstone), WrongExpectedVersion);
  EXPECT_THROW(store().delete_stream("missing", ExpectedVersion::any(), DeleteMode::soft), StreamNotFound);
  EXPECT_EQ(store().read_stream("s").state(), EventReader::State::ok);
}

TEST_P(Conformance, InvalidStreamIdsAndEventsAreRejectedClearly) {
  for (std::string bad : {std::string(""), std::string("a\nb"), std::string(1001, 'x'), std::string("\xff")}) {
    EXPECT_THROW(store().append(bad, ExpectedVersion::any(), {event("A")}), InvalidArgument);
    EXPECT_THROW(store().read_stream(bad), InvalidArgument);
    EXPECT_THROW(store().stream_info(bad), InvalidArgument);
  }
  try {
    store().append("$system", ExpectedVersion::any(), {event("A")});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("reserved"), std::string::npos);
  }
  try {
    store().append("s", ExpectedVersion::any(), {event("A"), event("bad\ttype")});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("event 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'s'"), std::string::npos) << e.what();
  }
  EventData nil = event("A");
  nil.id = Uuid();
  EXPECT_THROW(store().append("s", ExpectedVersion::any(), {nil}), InvalidArgument);
  EXPECT_EQ(store().head_position(), Position(0));
}

TEST_P(Conformance, TheLongestStreamIdWorksEverywhere) {
  std::string id;
  while (id.size() + 2 <= kMaxStreamIdBytes) id += "\xC3\xA9";  // é: 500 two-byte characters
  ASSERT_EQ(id.size(), 1000u);
  store().append(id, ExpectedVersion::no_stream(), {event("A")});
  auto events = read(id);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].stream, id);
  EXPECT_EQ(store().stream_info(id)->stream, id);
  EXPECT_EQ(read_all()[0].stream, id);
  EXPECT_THROW(store().append(id + "x", ExpectedVersion::any(), {event("A")}), InvalidArgument);
}

TEST_P(Conformance, SystemStreamsCannotBeDeletedAndReadAsMissing) {
  EXPECT_THROW(store().delete_stream("$system", ExpectedVersion::any(), DeleteMode::soft), InvalidArgument);
  EXPECT_THROW(store().delete_stream("$system", ExpectedVersion::any(), DeleteMode::tombstone), InvalidArgument);
  EXPECT_EQ(store().read_stream("$system").state(), EventReader::State::stream_not_found);
}

TEST_P(Conformance, ListsStreamsInPagesAndReportsStats) {
  for (auto name : {"c", "a", "b", "d"}) append_n(name, 2);
  store().delete_stream("d", ExpectedVersion::any(), DeleteMode::soft);
  auto page1 = store().list_streams({}, 3);
  ASSERT_EQ(page1.size(), 3u);
  EXPECT_EQ(page1[0].stream, "a");
  EXPECT_EQ(page1[2].stream, "c");
  EXPECT_EQ(page1[0].last_version, StreamVersion(2));
  EXPECT_EQ(page1[0].event_count, 2u);
  auto page2 = store().list_streams("c", 3);
  ASSERT_EQ(page2.size(), 1u);
  EXPECT_EQ(page2[0].stream, "d");
  EXPECT_EQ(page2[0].status, StreamStatus::soft_deleted);
  auto stats = store().stats();
  EXPECT_EQ(stats.streams, 4u);
  EXPECT_EQ(stats.head, Position(8));
  EXPECT_EQ(stats.head, Position(8));
  EXPECT_EQ(stats.engine, GetParam().name);
}

TEST_P(Conformance, StreamInfoTracksTimes) {
  store().append("s", ExpectedVersion::any(), {event("A")});
  auto info1 = *store().stream_info("s");
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  store().append("s", ExpectedVersion::any(), {event("B")});
  auto info2 = *store().stream_info("s");
  EXPECT_EQ(info2.created_at, info1.created_at);
  EXPECT_GT(info2.updated_at, info1.updated_at);
  EXPECT_EQ(info2.event_count, 2u);
}

TEST_P(Conformance, ConcurrentWritersToOneStreamWinExactlyOncePerVersion) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  std::vector<std::thread> threads;
  std::atomic<int> conflicts{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread;) {
        auto current = store().stream_info("contended");
        std::uint64_t v = current ? current->last_version.value() : 0;
        try {
          store().append("contended", ExpectedVersion::exact(v),
                         {event("W", "{\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i) + "}")});
          ++i;
        } catch (const WrongExpectedVersion&) {
          ++conflicts;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  auto events = read("contended");
  ASSERT_EQ(events.size(), static_cast<std::size_t>(kThreads * kPerThread));
  std::set<std::string> payloads;
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].version.value(), i + 1);
    EXPECT_EQ(events[i].position.value(), i + 1);
    payloads.insert(events[i].data);
  }
  EXPECT_EQ(payloads.size(), events.size()) << "every acknowledged append is stored exactly once";
}

TEST_P(Conformance, ConcurrentWritersToManyStreamsGetGaplessPositions) {
  constexpr int kThreads = 16;
  constexpr int kPerThread = 40;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::map<std::uint64_t, std::string> acknowledged;  // position -> stream
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string stream = "writer-" + std::to_string(t % 5);
      for (int i = 0; i < kPerThread; ++i) {
        std::vector<EventData> batch(1 + (i % 3), event("W"));
        auto r = store().append(stream, ExpectedVersion::any(), batch);
        std::lock_guard lock(mu);
        for (auto p = r.first_position.value(); p <= r.last_position.value(); ++p) {
          EXPECT_TRUE(acknowledged.emplace(p, stream).second) << "position " << p << " given twice";
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  auto all = read_all();
  ASSERT_EQ(all.size(), acknowledged.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i].position.value(), i + 1);
    EXPECT_EQ(acknowledged[i + 1], all[i].stream);
  }
  for (int s = 0; s < 5; ++s) {
    auto events = read("writer-" + std::to_string(s));
    for (std::size_t i = 0; i < events.size(); ++i) ASSERT_EQ(events[i].version.value(), i + 1);
  }
}

TEST_P(Conformance, ConflictsInsideAConcurrentGroupFailAlone) {
  append_n("hot", 1);
  constexpr int kThreads = 12;
  std::atomic<int> wins{0}, losses{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        store().append("hot", ExpectedVersion::exact(1), {event("Race")});
        ++wins;
      } catch (const WrongExpectedVersion&) {
        ++losses;
      }
      store().append("own-" + std::to_string(t), ExpectedVersion::no_stream(), {event("Mine")});
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(losses.load(), kThreads - 1);
  EXPECT_EQ(read("hot").size(), 2u);
  auto all = read_all();
  EXPECT_EQ(all.size(), 2u + kThreads);
  for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i].position.value(), i + 1);
}

TEST_P(Conformance, APollingReaderSeesEveryEventOnceInOrderWhileWritersAppend) {
  constexpr int kWriters = 4;
  constexpr int kAppends = 150;
  std::atomic<int> writers_done{0};
  std::atomic<std::uint64_t> acknowledged{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; i < kAppends; ++i) {
        std::vector<EventData> batch(1 + (i % 3), event("W"));
        store().append("poll-" + std::to_string((w + i) % 7), ExpectedVersion::any(), batch);
        acknowledged += batch.size();
      }
      ++writers_done;
    });
  }
  std::uint64_t last = 0;
  bool in_order = true;
  for (;;) {
    bool finished = writers_done.load() == kWriters;  // read before polling: the last poll sees everything
    for (const auto& e : store().read_all({.from = Position(last + 1)})) {
      in_order = in_order && e.position.value() == last + 1;
      last = e.position.value();
    }
    if (finished || !in_order) break;
    store().wait_for_events_after(Position(last), std::chrono::milliseconds(20));
  }
  for (auto& t : writers) t.join();
  EXPECT_TRUE(in_order) << "a reader must never skip a position or see one twice (after position " << last << ")";
  EXPECT_EQ(last, acknowledged.load());
}

TEST_P(Conformance, AReaderStartedBeforeMoreAppendsContinuesWithoutGapOrRepeat) {
  append_n("s", 3000);
  std::uint64_t expect = 1;
  for (const auto& e : store().read_all()) {
    ASSERT_EQ(e.position.value(), expect++);
    if (expect == 1500) append_n("t", 500);
  }
  EXPECT_GE(expect - 1, 3000u);
  EXPECT_LE(expect - 1, 3500u);
}

TEST_P(Conformance, AcknowledgedAppendsSurviveReopening) {
  if (!harness_->durable()) GTEST_SKIP() << GetParam().name << " keeps nothing across opens";
  append_n("s", 3);
  store().delete_stream("s", ExpectedVersion::any(), DeleteMode::soft);
  store().append("s", ExpectedVersion::no_stream(), {event("After")});
  store_.reset();
  store_ = harness_->open();
  EXPECT_EQ(store().head_position(), Position(4));
  EXPECT_EQ(versions(read("s")), (V{4}));
  EXPECT_EQ(store().append("s", ExpectedVersion::exact(4), {event("Next")}).first_position, Position(5));
}

TEST_P(Conformance, WaitingForNewEventsWakesOnAnAppendAndTimesOut) {
  append_n("s", 2);
  EXPECT_EQ(store().wait_for_events_after(Position(1), std::chrono::seconds(5)), Position(2)) << "already there";
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(store().wait_for_events_after(Position(2), std::chrono::milliseconds(100)), Position(2));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    append_n("s", 1);
  });
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(store().wait_for_events_after(Position(2), std::chrono::seconds(30)), Position(3));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5))
      << "woken by the append, not the timeout";
  writer.join();
  EXPECT_EQ(store().wait_for_events_after(Position(3), std::chrono::milliseconds(0)),
            Position(3));  // a zero timeout returns at once
}

TEST_P(Conformance, LocalAppendsWakeWaitersAtOnce) {
  // 100 rounds of append-then-wake. Polling alone (50 ms) would take 5 s; wake-ups take ~1 ms each.
  constexpr int kRounds = 100;
  std::atomic<std::uint64_t> acknowledged{0};
  std::thread writer([&] {
    for (int i = 1; i <= kRounds; ++i) {
      append_n("ping", 1);
      while (acknowledged.load() < static_cast<std::uint64_t>(i)) std::this_thread::yield();
    }
  });
  auto start = std::chrono::steady_clock::now();
  Position last(0);
  while (last.value() < kRounds) {
    last = store().wait_for_events_after(last, std::chrono::seconds(10));
    acknowledged = last.value();
  }
  auto elapsed = std::chrono::steady_clock::now() - start;
  writer.join();
  EXPECT_LT(elapsed, std::chrono::seconds(4)) << "waiters were not woken by local commits";
}

TEST_P(Conformance, WaitingForeverIsAllowed) {
  append_n("s", 1);
  EXPECT_EQ(store().wait_for_events_after(Position(0), std::chrono::milliseconds::max()), Position(1));
}

std::vector<std::uint64_t> expected_positions(const std::vector<RecordedEvent>& all, const EventFilter& f) {
  std::vector<std::uint64_t> v;
  for (const auto& e : all) {
    if (f.matches(e.stream, e.type)) v.push_back(e.position.value());
  }
  return v;
}

TEST_P(Conformance, FilteredReadsOfAllReturnOnlyMatchingCategoriesPrefixesAndTypes) {
  // Neighbours of the category "account" in byte order, a stream named after the category, and ids
  // with multi-byte characters around a prefix.
  const char* streams[] = {"account-1", "account", "accounts-2", "account-2", "accoun-3", "account.x",
                           "order-1",   "é-1",     "éa",         "f",         "é",        "\xc3\xa9\xf4\x8f\xbf\xbf"};
  const char* types[] = {"Opened", "Deposited", "Closed"};
  int i = 0;
  for (int round = 0; round < 3; ++round) {
    for (const char* s : streams) {
      store().append(s, ExpectedVersion::any(), {event(types[i++ % 3]), event(types[i++ % 3])});
    }
  }
  auto all = read_all();
  std::vector<EventFilter> filters = {
      {.category = "account"},        {.category = "order", .event_types = {"Opened", "Closed"}},
      {.stream_prefix = "account-"},  {.stream_prefix = "acc"},
      {.stream_prefix = "é"},         {.stream_prefix = ""},
      {.event_types = {"Deposited"}}, {.event_types = {"Nothing"}},
      {.category = "nothing"},
  };
  for (const auto& f : filters) {
    SCOPED_TRACE(fmt_filter(f));
    auto want = expected_positions(all, f);
    EXPECT_EQ(positions(read_all({.filter = f})), want);
    auto backward = want;
    std::reverse(backward.begin(), backward.end());
    EXPECT_EQ(positions(read_all({.direction = Direction::backward, .filter = f})), backward);
    // From a position, with a count.
    std::vector<std::uint64_t> later;
    for (auto p : want) {
      if (p >= 20 && later.size() < 5) later.push_back(p);
    }
    EXPECT_EQ(positions(read_all({.from = Position(20), .max_count = 5, .filter = f})), later);
  }
  EXPECT_FALSE(expected_positions(all, filters[0]).empty());
}

TEST_P(Conformance, AFilteredReadReportsHowFarItLookedPastTheLastMatch) {
  append_n("noise-1", 5000, "Noise");
  store().append("wanted-1", ExpectedVersion::any(), {event("Wanted")});
  append_n("noise-2", 5000, "Noise");
  auto reader = store().read_all({.filter = EventFilter{.category = "wanted"}});
  EXPECT_EQ(reader.scanned_through(), 0u);
  std::vector<std::uint64_t> progress;
  std::vector<std::uint64_t> found;
  while (!reader.at_end()) {
    if (const RecordedEvent* e = reader.try_next()) found.push_back(e->position.value());
    progress.push_back(reader.scanned_through());
  }
  EXPECT_EQ(found, (V{5001}));
  EXPECT_EQ(reader.scanned_through(), 10001u) << "looked through the head though nothing after 5001 matched";
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
  EXPECT_GT(progress.size(), 2u) << "a long run without a match is reported in steps, not one unbounded scan";
  // A plain read reports the last event it returned.
  auto plain = store().read_all({.max_count = 3});
  plain.to_vector();
  EXPECT_EQ(plain.scanned_through(), 3u);
  // Nothing matches at all: the read still ends at the head.
  auto none = store().read_all({.from = Position(9000), .filter = EventFilter{.event_types = {"Missing"}}});
  EXPECT_TRUE(none.to_vector().empty());
  EXPECT_EQ(none.scanned_through(), 10001u);
  auto back = store().read_all({.direction = Direction::backward, .filter = EventFilter{.category = "wanted"}});
  EXPECT_EQ(positions(back.to_vector()), (V{5001}));
  EXPECT_EQ(back.scanned_through(), 1u);
}

TEST_P(Conformance, MalformedFiltersAreRejected) {
  EXPECT_THROW(store().read_all({.filter = EventFilter{.category = "account-1"}}), InvalidArgument);
  EXPECT_THROW(store().read_all({.filter = EventFilter{.category = ""}}), InvalidArgument);
  EXPECT_THROW(store().read_all({.filter = EventFilter{.category = "a", .stream_prefix = "a"}}), InvalidArgument);
  EXPECT_THROW(store().read_all({.filter = EventFilter{.event_types = {""}}}), InvalidArgument);
}

Uuid colliding_id;
Uuid generate_colliding_id() { return colliding_id; }

TEST_P(Conformance, AGeneratedIdThatIsAlreadyStoredFailsThatAppendAloneTransiently) {
  colliding_id = Uuid::v4();
  store().append("s", ExpectedVersion::any(), {event_with_id("A", colliding_id)});
  detail::generate_id_for_testing = &generate_colliding_id;
  try {
    store().append("t", ExpectedVersion::any(), {event("B")});
    detail::generate_id_for_testing = nullptr;
    FAIL() << "a generated id collided with a stored one";
  } catch (const StorageError& e) {
    detail::generate_id_for_testing = nullptr;
    EXPECT_TRUE(e.transient()) << e.what();
    EXPECT_EQ(std::string(e.what()), detail::generated_id_collision("t").what()) << "the same message everywhere";
  }
  EXPECT_EQ(store().head_position(), Position(1)) << "nothing was written";
  EXPECT_FALSE(store().stream_info("t")) << "not even the stream";
  EXPECT_EQ(store().append("t", ExpectedVersion::no_stream(), {event("B")}).last_version, StreamVersion(1))
      << "repeating it succeeds";
}

TEST_P(Conformance, EveryEngineDecidesTheExpectedVersionAsTheSharedRulesDo) {
  // Each stream is brought into one state through the API, then every expected version is tried on it; the
  // engine (including the server-side copy of the rule in PostgreSQL's append_group) must accept exactly
  // what detail::check_expected accepts, and fail the same way.
  struct Setup {
    std::string name;
    std::function<void(EventStore&, const std::string&)> make;
    detail::StreamState state;
  };
  auto st = [](bool exists, std::uint64_t last, std::uint64_t hidden, bool tomb) {
    detail::StreamState s;
    s.exists = exists;
    s.last = StreamVersion(last);
    s.hidden_through = StreamVersion(hidden);
    s.tombstoned = tomb;
    return s;
  };
  auto append = [](EventStore& s, const std::string& id, int n) {
    for (int i = 0; i < n; ++i) s.append(id, ExpectedVersion::any(), {event("E")});
  };
  std::vector<Setup> setups = {
      {"never-written", [](EventStore&, const std::string&) {}, st(false, 0, 0, false)},
      {"two-events", [&](EventStore& s, const std::string& id) { append(s, id, 2); }, st(true, 2, 0, false)},
      {"soft-deleted",
       [&](EventStore& s, const std::string& id) {
         append(s, id, 2);
         s.delete_stream(id, ExpectedVersion::any(), DeleteMode::soft);
       },
       st(true, 2, 2, false)},
      {"written-after-soft-delete",
       [&](EventStore& s, const std::string& id) {
         append(s, id, 2);
         s.delete_stream(id, ExpectedVersion::any(), DeleteMode::soft);
         append(s, id, 1);
       },
       st(true, 3, 2, false)},
      {"tombstoned",
       [&](EventStore& s, const std::string& id) {
         append(s, id, 1);
         s.delete_stream(id, ExpectedVersion::any(), DeleteMode::tombstone);
       },
       st(true, 1, 1, true)},
      {"tombstoned-unwritten",
       [&](EventStore& s, const std::string& id) {
         s.delete_stream(id, ExpectedVersion::any(), DeleteMode::tombstone);
       },
       st(true, 0, 0, true)},
  };
  std::vector<ExpectedVersion> expectations = {ExpectedVersion::any(), ExpectedVersion::no_stream(),
                                               ExpectedVersion::stream_exists()};
  for (std::uint64_t v = 0; v <= 4; ++v) expectations.push_back(ExpectedVersion::exact(v));
  auto outcome = [](const std::function<void()>& f) -> std::string {
    try {
      f();
      return "ok";
    } catch (const WrongExpectedVersion& e) {
      return std::string("wrong expected version: ") + e.what();
    } catch (const StreamDeleted& e) {
      return std::string("deleted: ") + e.what();
    }
  };
  int n = 0;
  for (const auto& setup : setups) {
    for (ExpectedVersion expected : expectations) {
      std::string id = "case-" + std::to_string(n++);
      setup.make(store(), id);
      std::string rule = outcome([&] { detail::check_expected(id, setup.state, expected); });
      std::string engine = outcome([&] { store().append(id, expected, {event("Probe")}); });
      EXPECT_EQ(engine, rule) << setup.name << ", expected " << expected.to_string();
    }
  }
}

TEST_P(Conformance, DeletesAreRefusedWithTheSameErrorsEverywhere) {
  try {
    store().delete_stream("$system", ExpectedVersion::any(), DeleteMode::soft);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()),
              "stream '$system' is reserved for the system: ids starting with '$' cannot be deleted");
  }
  try {
    store().delete_stream("never", ExpectedVersion::any(), DeleteMode::soft);
    FAIL();
  } catch (const StreamNotFound& e) {
    EXPECT_EQ(std::string(e.what()), "stream 'never' not found");
  }
  EXPECT_FALSE(store().stream_info("never")) << "a refused soft delete creates nothing";
  append_n("s", 2);
  try {
    store().delete_stream("s", ExpectedVersion::exact(1), DeleteMode::tombstone);
    FAIL();
  } catch (const WrongExpectedVersion& e) {
    EXPECT_EQ(e.actual(), StreamVersion(2));
  }
  EXPECT_EQ(store().stream_info("s")->status, StreamStatus::active) << "a refused delete changes nothing";
}

TEST_P(Conformance, AWaitEndsPromptlyWhenItsStopTokenIsRequested) {
  append_n("s", 1);
  std::stop_source stop;
  Position got(99);
  std::thread waiter(
      [&] { got = store().wait_for_events_after(Position(1), std::chrono::hours(1), stop.get_token()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto start = std::chrono::steady_clock::now();
  stop.request_stop();
  waiter.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2)) << "the wait was not cancelled";
  EXPECT_EQ(got, Position(1)) << "a cancelled wait returns the head as it is";
  std::stop_source already;
  already.request_stop();
  EXPECT_EQ(store().wait_for_events_after(Position(1), std::chrono::hours(1), already.get_token()), Position(1));
}

TEST_P(Conformance, DestroyingTheStoreWakesItsWaitersWhichReturnAsOnTimeout) {
  append_n("s", 1);
  constexpr int kWaiters = 4;
  std::atomic<int> returned{0};
  std::vector<Position> got(kWaiters, Position(99));
  std::vector<std::thread> waiters;
  EventStore* s = store_.get();
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&, s, i] {
      got[i] = s->wait_for_events_after(Position(1), std::chrono::hours(1));
      ++returned;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // all in their wait by then
  EXPECT_EQ(returned.load(), 0);
  auto start = std::chrono::steady_clock::now();
  store_.reset();  // under ASan, a waiter still inside the store after this would be a use-after-free
  for (auto& w : waiters) w.join();
  EXPECT_EQ(returned.load(), kWaiters);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  for (Position p : got) EXPECT_EQ(p, Position(1));
}

INSTANTIATE_TEST_SUITE_P(Engines, Conformance, ::testing::ValuesIn(all_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
