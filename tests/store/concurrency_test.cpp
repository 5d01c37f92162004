// The store under concurrency and at the edges of its objects' lifetimes, on every engine:
// - many threads doing random appends, repeats, deletes and reads at once, then the invariants that must
//   hold whatever the interleaving (every acknowledged append present exactly once, `$all` gapless and
//   in order, each stream's versions contiguous, repeats returning the first result, readers and a
//   follower started during the writes seeing a prefix of the final log);
// - a delete while a reader is in the middle of a stream;
// - a reader that outlives its store;
// - a stop token that ends one wait and no other.

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stop_token>
#include <thread>

#include <gtest/gtest.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

// A store whose readers page by a known size, small on PostgreSQL (an option there) so that crossing
// pages is cheap; the other engines have theirs fixed.
struct PagedStore {
  std::unique_ptr<EngineHarness> harness;
  std::unique_ptr<EventStore> store;
  std::size_t page = 0;
};

PagedStore open_paged(const EngineParam& engine, std::size_t pg_page = 16) {
  PagedStore p;
  p.harness = engine.make();
#ifdef SOURCED_WITH_POSTGRES
  if (auto* pg = dynamic_cast<PostgresHarness*>(p.harness.get())) {
    PostgresOptions o;
    o.schema = pg->schema();
    o.read_page_size = pg_page;
    p.page = pg_page;
    p.store = open_postgres_store(*test_pg_url(), o);
    return p;
  }
#endif
  (void)pg_page;
  p.page = engine.name == "sqlite" ? 1024 : 512;  // SqliteStore's and MemoryStore's kPageSize
  p.store = p.harness->open();
  return p;
}

std::string tag_of(const RecordedEvent& e) { return e.data; }

// Appends `n` events to `stream` in batches of at most 500, each tagged with its index in the stream.
void fill(EventStore& store, const std::string& stream, std::size_t n) {
  for (std::size_t done = 0; done < n;) {
    std::vector<EventData> batch;
    for (; batch.size() < 500 && done < n; ++done) {
      batch.push_back(event("Filled", "{\"i\":" + std::to_string(done + 1) + "}"));
    }
    store.append(stream, ExpectedVersion::any(), batch);
  }
}

// --- many threads at once ---------------------------------------------------------------------------

struct Ack {
  std::string stream;
  ExpectedVersion expected = ExpectedVersion::any();
  std::vector<EventData> events;
  AppendResult result;
};

class Concurrent : public ::testing::TestWithParam<EngineParam> {};

TEST_P(Concurrent, RandomOperationsKeepTheInvariants) {
  if (auto why = GetParam().make()->skip_reason()) GTEST_SKIP() << *why;
  auto ps = open_paged(GetParam());
  EventStore& store = *ps.store;
  constexpr int kWriters = 4;
  const int ops = static_cast<int>(
      std::strtol(std::getenv("SOURCED_CONCURRENT_OPS") ? std::getenv("SOURCED_CONCURRENT_OPS") : "150", nullptr, 10));
  const std::vector<std::string> shared = {"acc-0", "acc-1", "acc-2", "acc-3", "acc-4", "acc-5"};

  std::mutex mu;  // guards what the threads report
  std::vector<Ack> acks;
  std::set<std::string> failed_tags;  // events of appends that were refused: must not be stored
  std::vector<std::string> problems;  // failures seen in threads, reported by the main thread
  auto problem = [&](std::string what) {
    std::lock_guard lock(mu);
    problems.push_back(std::move(what));
  };
  std::atomic<bool> writing{true};

  auto writer = [&](int t) {
    std::mt19937_64 rng(1000 + t);
    auto pick = [&](std::uint64_t n) { return rng() % n; };
    std::map<std::string, std::uint64_t> last_seen;  // the last version this thread saw per stream
    std::vector<Ack> mine;
    int counter = 0;
    for (int op = 0; op < ops; ++op) {
      std::string s = pick(4) == 0 ? "own-" + std::to_string(t) : shared[pick(shared.size())];
      auto r = pick(100);
      try {
        if (r < 70) {
          Ack a;
          a.stream = s;
          std::uint64_t n = pick(50) == 0 ? 1 + pick(ps.page + 10) : 1 + pick(5);
          for (std::uint64_t i = 0; i < n; ++i) {
            EventData e = event("W", "{\"w\":" + std::to_string(t) + ",\"n\":" + std::to_string(++counter) + "}");
            if (pick(3) != 0) e.id = Uuid::v4();
            a.events.push_back(std::move(e));
          }
          switch (pick(5)) {
            case 0:
            case 1:
              a.expected = ExpectedVersion::any();
              break;
            case 2:
            case 3:
              a.expected = ExpectedVersion::exact(last_seen[s]);
              break;
            default:
              a.expected = pick(2) ? ExpectedVersion::no_stream() : ExpectedVersion::stream_exists();
          }
          try {
            a.result = store.append(s, a.expected, a.events);
          } catch (const WrongExpectedVersion& e) {
            last_seen[s] = e.actual().value_or(StreamVersion()).value();
            std::lock_guard lock(mu);
            for (const auto& ev : a.events) failed_tags.insert(ev.data);
            continue;
          }
          if (a.result.replayed) problem("a new append came back as a repeat");
          last_seen[s] = a.result.last_version.value();
          mine.push_back(a);
          // Now and then repeat an earlier append whose ids were all given: it must return the first result.
          if (pick(5) == 0) {
            const Ack& old = mine[pick(mine.size())];
            bool all_given = true;
            for (const auto& ev : old.events) all_given &= ev.id.has_value();
            // no_stream may stop matching after another thread's soft delete; `any` always matches a repeat.
            auto expected =
                old.expected.kind() == ExpectedVersion::Kind::no_stream ? ExpectedVersion::any() : old.expected;
            if (all_given) {
              auto again = store.append(old.stream, expected, old.events);
              if (!again.replayed || again.first_position != old.result.first_position ||
                  again.last_position != old.result.last_position || again.first_version != old.result.first_version ||
                  again.last_version != old.result.last_version) {
                problem("a repeat of the append at position " + std::to_string(old.result.first_position.value()) +
                        " did not return the first result");
              }
            }
          }
        } else if (r < 80) {
          if (s.starts_with("own-")) continue;
          try {
            store.delete_stream(s, ExpectedVersion::any(), DeleteMode::soft);
          } catch (const StreamNotFound&) {
          }
        } else {
          // A stream read during the writes: versions contiguous from where it starts, its own events only.
          try {
            auto events = store.read_stream(s, {.max_count = 1 + pick(3 * ps.page)}).to_vector();
            for (std::size_t i = 0; i < events.size(); ++i) {
              if (events[i].stream != s) problem("read_stream(" + s + ") returned an event of " + events[i].stream);
              if (i > 0 && events[i].version.value() != events[i - 1].version.value() + 1) {
                problem("read_stream(" + s + ") skipped from version " + std::to_string(events[i - 1].version.value()) +
                        " to " + std::to_string(events[i].version.value()));
              }
            }
          } catch (const StreamNotFound&) {
          }
        }
      } catch (const std::exception& e) {
        problem("writer " + std::to_string(t) + " op " + std::to_string(op) + ": " + e.what());
      }
    }
    std::lock_guard lock(mu);
    for (auto& a : mine) acks.push_back(std::move(a));
  };

  // Readers of `$all` started during the writes: each read is a gapless prefix 1..k of the final log.
  std::vector<std::vector<std::string>> snapshots;
  auto snapshot_reader = [&] {
    while (writing) {
      std::this_thread::sleep_for(5ms);  // leave the writers some of the two cores
      std::vector<std::string> seen;
      for (const auto& e : store.read_all()) {
        if (e.position.value() != seen.size() + 1) {
          problem("a $all read went from position " + std::to_string(seen.size()) + " to " +
                  std::to_string(e.position.value()));
          return;
        }
        seen.push_back(tag_of(e));
      }
      std::lock_guard lock(mu);
      snapshots.push_back(std::move(seen));
    }
  };
  // A follower: waits for new events and reads them, as a live subscription does. It must see each
  // position once, in order, never one at or below what it has seen.
  std::vector<std::string> followed;
  auto follower = [&] {
    std::uint64_t after = 0;
    for (;;) {
      bool done = !writing;  // read before the head, so a last pass happens after the writers stopped
      Position head = store.wait_for_events_after(Position(after), 100ms);
      for (const auto& e : store.read_all({.from = Position(after + 1)})) {
        if (e.position.value() != after + 1) {
          problem("the follower went from position " + std::to_string(after) + " to " +
                  std::to_string(e.position.value()));
          return;
        }
        after = e.position.value();
        followed.push_back(tag_of(e));
      }
      if (done && after >= head.value()) return;
    }
  };

  std::vector<std::thread> threads;
  std::thread reader_thread(snapshot_reader);
  std::thread follower_thread(follower);
  for (int t = 0; t < kWriters; ++t) threads.emplace_back(writer, t);
  for (auto& t : threads) t.join();
  writing = false;
  reader_thread.join();
  follower_thread.join();
  for (const auto& p : problems) ADD_FAILURE() << p;
  ASSERT_TRUE(problems.empty());

  // The final log: gapless, in order, each stream's versions contiguous from 1.
  auto log = store.read_all().to_vector();
  ASSERT_EQ(log.size(), store.head_position().value());
  std::map<std::string, std::size_t> where;  // tag -> index in log
  std::map<std::string, std::uint64_t> versions;
  std::map<Uuid, int> id_count;
  for (std::size_t i = 0; i < log.size(); ++i) {
    ASSERT_EQ(log[i].position.value(), i + 1);
    ASSERT_TRUE(where.emplace(tag_of(log[i]), i).second) << "event " << tag_of(log[i]) << " stored twice";
    ASSERT_EQ(log[i].version.value(), ++versions[log[i].stream]) << "at position " << i + 1;
    ASSERT_EQ(++id_count[log[i].id], 1) << "id " << log[i].id.to_string() << " stored twice";
  }
  // Every acknowledged append is there, whole, exactly where its result says.
  std::size_t acked_events = 0;
  for (const auto& a : acks) {
    ASSERT_EQ(a.result.last_position.value() - a.result.first_position.value() + 1, a.events.size());
    for (std::size_t i = 0; i < a.events.size(); ++i) {
      const RecordedEvent& e = log.at(a.result.first_position.value() - 1 + i);
      ASSERT_EQ(e.data, a.events[i].data);
      ASSERT_EQ(e.stream, a.stream);
      ASSERT_EQ(e.version.value(), a.result.first_version.value() + i);
      if (a.events[i].id) ASSERT_EQ(e.id, *a.events[i].id);
    }
    acked_events += a.events.size();
  }
  // Nothing else: refused appends wrote nothing, and no event appeared that nobody appended.
  for (const auto& tag : failed_tags) ASSERT_EQ(where.count(tag), 0u) << "refused event " << tag << " was stored";
  ASSERT_EQ(acked_events, log.size());
  // Every reader saw a prefix of the final log; the follower saw all of it, once, in order.
  for (const auto& snap : snapshots) {
    ASSERT_LE(snap.size(), log.size());
    for (std::size_t i = 0; i < snap.size(); ++i) ASSERT_EQ(snap[i], tag_of(log[i])) << "at position " << i + 1;
  }
  ASSERT_EQ(followed.size(), log.size());
  for (std::size_t i = 0; i < log.size(); ++i) ASSERT_EQ(followed[i], tag_of(log[i])) << "at position " << i + 1;
  std::cout << GetParam().name << ": " << acks.size() << " appends acknowledged (" << log.size() << " events), "
            << failed_tags.size() << " events refused, " << snapshots.size() << " $all snapshots\n";
}

INSTANTIATE_TEST_SUITE_P(Engines, Concurrent, ::testing::ValuesIn(all_engines()),
                         [](const auto& info) { return info.param.name; });

// --- lifetimes ----------------------------------------------------------------------------------------

class Lifetimes : public ::testing::TestWithParam<EngineParam> {};

// A reader reads the stream as it was when read_stream() returned: a delete after that (soft or
// tombstone) does not cut it short or change what it returns, whether it had started or not. Events stay
// stored after a delete, so there is nothing else it could sensibly return; a read opened after the
// delete sees the stream deleted.
TEST_P(Lifetimes, DeleteWhileAReaderIsMidStream) {
  if (auto why = GetParam().make()->skip_reason()) GTEST_SKIP() << *why;
  for (auto mode : {DeleteMode::soft, DeleteMode::tombstone}) {
    SCOPED_TRACE(mode == DeleteMode::soft ? "soft delete" : "tombstone");
    auto ps = open_paged(GetParam(), 8);
    EventStore& store = *ps.store;
    const std::size_t n = 2 * ps.page + ps.page / 2;
    fill(store, "doomed-1", n);
    fill(store, "other-1", 3);
    auto forward = store.read_stream("doomed-1");
    auto backward = store.read_stream("doomed-1", {.direction = Direction::backward});
    auto unstarted = store.read_stream("doomed-1");
    auto all = store.read_all();
    // Past the first page of each.
    for (std::size_t i = 0; i < ps.page + 3; ++i) {
      ASSERT_NE(forward.next(), nullptr);
      ASSERT_NE(backward.next(), nullptr);
      ASSERT_NE(all.next(), nullptr);
    }
    store.delete_stream("doomed-1", ExpectedVersion::any(), mode);

    std::uint64_t expect = ps.page + 4;
    while (const RecordedEvent* e = forward.next()) {
      ASSERT_EQ(e->version.value(), expect++);
      ASSERT_EQ(e->stream, "doomed-1");
      ASSERT_EQ(e->data, "{\"i\":" + std::to_string(e->version.value()) + "}");
    }
    ASSERT_EQ(expect, n + 1);
    expect = n - ps.page - 3;
    while (const RecordedEvent* e = backward.next()) ASSERT_EQ(e->version.value(), expect--);
    ASSERT_EQ(expect, 0u);
    ASSERT_EQ(unstarted.to_vector().size(), n);
    expect = ps.page + 4;
    while (const RecordedEvent* e = all.next()) ASSERT_EQ(e->position.value(), expect++);
    ASSERT_EQ(expect, n + 4);

    if (mode == DeleteMode::soft) {
      ASSERT_EQ(store.read_stream("doomed-1").state(), EventReader::State::stream_not_found);
    } else {
      ASSERT_THROW(store.read_stream("doomed-1"), StreamDeleted);
    }
  }
}

// A reader keeps what it needs to go on (the engine's connections or data) alive itself: once the store
// object is destroyed, its readers still iterate to the end and return the right events. (Run under
// AddressSanitizer by scripts/sanitize.sh, this is also the use-after-free check.)
TEST_P(Lifetimes, AReaderOutlivesItsStore) {
  if (auto why = GetParam().make()->skip_reason()) GTEST_SKIP() << *why;
  auto ps = open_paged(GetParam(), 8);
  const std::size_t n = 2 * ps.page + ps.page / 2;
  fill(*ps.store, "kept-1", n);
  auto started = ps.store->read_stream("kept-1");
  auto unstarted = ps.store->read_stream("kept-1", {.direction = Direction::backward});
  auto all = ps.store->read_all();
  for (std::size_t i = 0; i < ps.page + 3; ++i) {
    ASSERT_NE(started.next(), nullptr);
    ASSERT_NE(all.next(), nullptr);
  }
  ps.store.reset();

  std::uint64_t expect = ps.page + 4;
  while (const RecordedEvent* e = started.next()) {
    ASSERT_EQ(e->version.value(), expect++);
    ASSERT_EQ(e->data, "{\"i\":" + std::to_string(e->version.value()) + "}");
  }
  ASSERT_EQ(expect, n + 1);
  expect = n;
  for (const auto& e : unstarted) ASSERT_EQ(e.version.value(), expect--);
  ASSERT_EQ(expect, 0u);
  expect = ps.page + 4;
  for (const auto& e : all) ASSERT_EQ(e.position.value(), expect++);
  ASSERT_EQ(expect, n + 1);
}

// A stop token ends its own wait at once and no other: a second thread waiting on the same store keeps
// waiting, and still wakes for the next append.
TEST_P(Lifetimes, AStopEndsOnlyItsOwnWait) {
  if (auto why = GetParam().make()->skip_reason()) GTEST_SKIP() << *why;
  auto ps = open_paged(GetParam());
  fill(*ps.store, "w-1", 1);
  EventStore* store = ps.store.get();
  std::stop_source stop;
  std::atomic<std::uint64_t> stopped_got{99}, other_got{99};
  std::atomic<bool> stopped_done{false}, other_done{false};
  std::thread stopped([&] {
    stopped_got = store->wait_for_events_after(Position(1), 1h, stop.get_token()).value();
    stopped_done = true;
  });
  std::thread other([&] {
    other_got = store->wait_for_events_after(Position(1), 1h).value();
    other_done = true;
  });
  std::this_thread::sleep_for(200ms);  // both blocked in their wait by then
  ASSERT_FALSE(stopped_done);
  ASSERT_FALSE(other_done);
  auto start = std::chrono::steady_clock::now();
  stop.request_stop();
  while (!stopped_done && std::chrono::steady_clock::now() - start < 5s) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(stopped_done) << "the stopped wait did not end";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_EQ(stopped_got, 1u) << "a stopped wait returns the head as it is";
  std::this_thread::sleep_for(200ms);  // past a few of PostgreSQL's and SQLite's polls
  EXPECT_FALSE(other_done) << "stopping one wait ended another";
  ps.store->append("w-1", ExpectedVersion::any(), {event("Woken")});
  stopped.join();
  other.join();
  EXPECT_EQ(other_got, 2u);
}

INSTANTIATE_TEST_SUITE_P(Engines, Lifetimes, ::testing::ValuesIn(all_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
