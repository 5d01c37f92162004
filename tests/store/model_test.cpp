// Model-based test: random sequences of appends (caller-given and generated ids, repeats of earlier
// appends, batches larger than a read page), deletes, reads of streams and of `$all` in both directions
// with ranges that cross page boundaries, stream_info and list_streams run on each engine and on a tiny
// model written here; every outcome (result or error) and every read must agree.
//
// Each engine runs SOURCED_MODEL_SEEDS seeds (default 20) of SOURCED_MODEL_STEPS operations (default
// 400) on a fresh store per seed. A failure names its seed and operation; SOURCED_MODEL_SEED=N runs only
// seed N again, e.g.
//   SOURCED_MODEL_SEED=7 ./tests/sourced_tests --gtest_filter='*ModelBased*sqlite'

#include <cstdlib>
#include <map>
#include <random>

#include <gtest/gtest.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::strtoull(v, nullptr, 10);
}

// Where two sequences of keys part, for a readable failure when a read crossing pages goes wrong.
std::string first_difference(const std::vector<std::uint64_t>& got, const std::vector<std::uint64_t>& want) {
  std::size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  auto at = [&](const std::vector<std::uint64_t>& v) { return i < v.size() ? std::to_string(v[i]) : "the end"; };
  return "got " + std::to_string(got.size()) + " events, want " + std::to_string(want.size()) +
         "; first difference at #" + std::to_string(i) + ": got " + at(got) + ", want " + at(want);
}

struct ModelEvent {
  Uuid id;
  std::string stream;
  std::uint64_t version;
  std::uint64_t position;
  std::string type;
  std::string data;
};

struct ModelStream {
  std::uint64_t last = 0;
  std::uint64_t hidden = 0;
  bool tombstoned = false;
  std::vector<std::uint64_t> positions;  // index version-1

  std::uint64_t visible() const { return last - hidden; }
  StreamStatus status() const {
    if (tombstoned) return StreamStatus::tombstoned;
    return last > 0 && last == hidden ? StreamStatus::soft_deleted : StreamStatus::active;
  }
};

struct Model {
  std::map<std::string, ModelStream> streams;
  std::vector<ModelEvent> log;
  std::map<Uuid, std::uint64_t> ids;  // every id known so far: given ones, and generated ones once read back

  // Returns the error code, or nullopt and the result. Events without an id get a nil id here; the test
  // reads the generated ones back and calls learn_id().
  std::optional<ErrorCode> append(const std::string& s, ExpectedVersion ev, const std::vector<EventData>& events,
                                  AppendResult& out) {
    ModelStream* st = streams.count(s) ? &streams[s] : nullptr;
    if (st && st->tombstoned) return ErrorCode::stream_deleted;
    std::uint64_t last = st ? st->last : 0;
    bool visible = st && st->last > st->hidden;
    // Idempotency: every event has a caller id, all found, in this stream, contiguous.
    std::size_t found = 0;
    for (const auto& e : events) found += e.id && ids.count(*e.id);
    if (found > 0) {
      // Not a repeat: the expected version is checked before the reused id is reported.
      auto conflict = [&] {
        return expected_ok(ev, last, visible) ? ErrorCode::duplicate_event_id : ErrorCode::wrong_expected_version;
      };
      if (found != events.size()) return conflict();
      const ModelEvent& first = log[ids[*events[0].id] - 1];
      for (std::size_t i = 0; i < events.size(); ++i) {
        const ModelEvent& e = log[ids[*events[i].id] - 1];
        if (e.stream != s || e.version != first.version + i) return conflict();
      }
      bool matches = ev.kind() == ExpectedVersion::Kind::any || ev.kind() == ExpectedVersion::Kind::stream_exists ||
                     (ev.kind() == ExpectedVersion::Kind::no_stream &&
                      (first.version == 1 || first.version - 1 == (st ? st->hidden : 0))) ||
                     (ev.kind() == ExpectedVersion::Kind::exact && ev.version().value() + 1 == first.version);
      if (!matches) return conflict();
      out = {StreamVersion(first.version), StreamVersion(first.version + events.size() - 1), Position(first.position),
             Position(first.position + events.size() - 1), true};
      return std::nullopt;
    }
    if (!expected_ok(ev, last, visible)) return ErrorCode::wrong_expected_version;
    out = {StreamVersion(last + 1), StreamVersion(last), Position(0), Position(0), false};
    if (events.empty()) return std::nullopt;
    ModelStream& w = streams[s];
    out.first_position = Position(log.size() + 1);
    for (const auto& e : events) {
      ++w.last;
      log.push_back({e.id.value_or(Uuid()), s, w.last, log.size() + 1, e.type, e.data});
      w.positions.push_back(log.size());
      if (e.id) ids[*e.id] = log.size();
    }
    out.last_version = StreamVersion(w.last);
    out.last_position = Position(log.size());
    return std::nullopt;
  }

  static bool expected_ok(ExpectedVersion ev, std::uint64_t last, bool visible) {
    switch (ev.kind()) {
      case ExpectedVersion::Kind::any:
        return true;
      case ExpectedVersion::Kind::no_stream:
        return !visible;
      case ExpectedVersion::Kind::stream_exists:
        return visible;
      case ExpectedVersion::Kind::exact:
        return ev.version().value() == last;
    }
    return false;
  }

  std::optional<ErrorCode> remove(const std::string& s, ExpectedVersion ev, DeleteMode mode) {
    ModelStream* st = streams.count(s) ? &streams[s] : nullptr;
    if (st && st->tombstoned) return ErrorCode::stream_deleted;
    if (!expected_ok(ev, st ? st->last : 0, st && st->last > st->hidden)) return ErrorCode::wrong_expected_version;
    if (!st && mode == DeleteMode::soft) return ErrorCode::stream_not_found;
    ModelStream& w = streams[s];
    w.hidden = w.last;
    if (mode == DeleteMode::tombstone) w.tombstoned = true;
    return std::nullopt;
  }
};

// The page size each engine's readers use in this test, so read ranges can be chosen to cross page
// boundaries (and to end exactly on one). PostgreSQL takes it as an option; the others have it fixed.
struct ModelStore {
  std::unique_ptr<EngineHarness> harness;
  std::unique_ptr<EventStore> store;
  std::uint64_t page = 0;
};

ModelStore open_model_store(const EngineParam& engine, std::mt19937_64& rng) {
  ModelStore m;
  m.harness = engine.make();
#ifdef SOURCED_WITH_POSTGRES
  if (auto* pg = dynamic_cast<PostgresHarness*>(m.harness.get())) {
    static constexpr std::uint64_t kPages[] = {1, 3, 7, 50, 2048};
    PostgresOptions o;
    o.schema = pg->schema();
    o.read_page_size = kPages[rng() % std::size(kPages)];
    m.page = o.read_page_size;
    m.store = open_postgres_store(*test_pg_url(), o);
    return m;
  }
#endif
  (void)rng;
  m.page = engine.name == "sqlite" ? 1024 : 512;  // SqliteStore's and MemoryStore's kPageSize
  m.store = m.harness->open();
  return m;
}

class ModelBased : public ::testing::TestWithParam<EngineParam> {
 protected:
  void run_seed(std::uint64_t seed, std::uint64_t steps);
};

void ModelBased::run_seed(std::uint64_t seed, std::uint64_t steps) {
  std::mt19937_64 rng(seed);
  auto ms = open_model_store(GetParam(), rng);
  EventStore* store = ms.store.get();
  const std::uint64_t page = ms.page;
  Model model;
  auto pick = [&](std::uint64_t n) { return static_cast<std::uint64_t>(rng() % n); };
  std::vector<std::pair<std::string, std::vector<EventData>>> history;  // earlier appends, to repeat
  // Uppercase sorts before lowercase and "a" before "a-1" before "a-10" before "a-2": list_streams must
  // order by bytes on every engine.
  const std::vector<std::string> names = {"a", "a-1", "a-10", "a-2", "b-1", "b-2", "B-1", "c", "c-1", "d"};
  // A count for a read: small, a few pages, exactly on a page boundary, or everything.
  auto random_count = [&]() -> std::uint64_t {
    auto r = pick(100);
    if (r < 45) return 1 + pick(10);
    if (r < 80) return 1 + pick(3 * page + 2);
    if (r < 95) return (1 + pick(3)) * page + pick(3) - 1;
    return kUnlimited;
  };
  std::uint64_t data_counter = 0;

  for (std::uint64_t step = 0; step < steps; ++step) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " op " + std::to_string(step) +
                 " (replay with SOURCED_MODEL_SEED=" + std::to_string(seed) + ")");
    std::string s = names[pick(names.size())];
    std::uint64_t op = pick(100);
    auto current = model.streams.count(s) ? model.streams[s].last : 0;
    auto random_expected = [&]() {
      switch (pick(5)) {
        case 0:
          return ExpectedVersion::any();
        case 1:
          return ExpectedVersion::no_stream();
        case 2:
          return ExpectedVersion::stream_exists();
        case 3:
          return ExpectedVersion::exact(current);
        default:
          return ExpectedVersion::exact(pick(current + 2));
      }
    };
    if (op < 50) {
      std::vector<EventData> events;
      std::string target = s;
      if (!history.empty() && pick(8) == 0) {
        // A repeat: idempotent when it lands where it first did, an error elsewhere.
        auto& h = history[pick(history.size())];
        events = h.second;
        if (pick(2)) target = h.first;
      } else {
        // Mostly small appends; now and then one larger than a read page, so reads cross pages.
        std::uint64_t n = pick(40) == 0 ? 1 + pick(std::min<std::uint64_t>(page + page / 2, 1500)) : pick(5);
        bool generated = pick(3) == 0;  // the whole append without ids, or a mix
        for (std::uint64_t i = 0; i < n; ++i) {
          EventData e = event("T" + std::to_string(pick(3)), "{\"n\":" + std::to_string(++data_counter) + "}");
          if (!generated && pick(4) != 0) e.id = Uuid::v4();
          events.push_back(std::move(e));
        }
      }
      auto ev = random_expected();
      AppendResult expected_result;
      auto model_error = model.append(target, ev, events, expected_result);
      AppendResult r;
      try {
        r = store->append(target, ev, events);
      } catch (const Error& e) {
        ASSERT_TRUE(model_error) << "engine failed: " << e.what();
        ASSERT_EQ(e.code(), *model_error) << e.what();
        continue;
      }
      ASSERT_FALSE(model_error) << "engine appended, model said error " << static_cast<int>(*model_error);
      ASSERT_EQ(r.first_version, expected_result.first_version);
      ASSERT_EQ(r.last_version, expected_result.last_version);
      ASSERT_EQ(r.first_position, expected_result.first_position);
      ASSERT_EQ(r.last_position, expected_result.last_position);
      ASSERT_EQ(r.replayed, expected_result.replayed);
      if (events.empty() || r.replayed) continue;
      // Learn the generated ids by reading the append back, so later reads check them and a repeat with
      // them is idempotent like one with caller ids.
      bool any_generated = false;
      for (const auto& e : events) any_generated |= !e.id;
      if (any_generated) {
        auto back = store->read_all({.from = r.first_position, .max_count = events.size()}).to_vector();
        ASSERT_EQ(back.size(), events.size());
        for (std::size_t i = 0; i < events.size(); ++i) {
          ASSERT_EQ(back[i].position.value(), r.first_position.value() + i);
          ASSERT_EQ(back[i].stream, target);
          if (events[i].id) {
            ASSERT_EQ(back[i].id, *events[i].id);
            continue;
          }
          ASSERT_FALSE(back[i].id.is_nil());
          ASSERT_EQ(model.ids.count(back[i].id), 0u) << "generated id " << back[i].id.to_string() << " reused";
          model.ids[back[i].id] = back[i].position.value();
          model.log[back[i].position.value() - 1].id = back[i].id;
          events[i].id = back[i].id;
        }
      }
      history.emplace_back(target, std::move(events));
    } else if (op < 56) {
      auto mode = pick(10) == 0 ? DeleteMode::tombstone : DeleteMode::soft;
      auto ev = random_expected();
      auto model_error = model.remove(s, ev, mode);
      try {
        store->delete_stream(s, ev, mode);
        ASSERT_FALSE(model_error);
      } catch (const Error& e) {
        ASSERT_TRUE(model_error) << e.what();
        ASSERT_EQ(e.code(), *model_error) << e.what();
      }
    } else if (op < 76) {
      bool forward = pick(2);
      std::uint64_t count = random_count();
      // Mostly a version in or near the stream; sometimes no `from` (the default end).
      std::optional<StreamVersion> from;
      if (pick(6) != 0) from = StreamVersion(pick(current + 3));
      auto it = model.streams.find(s);
      if (it != model.streams.end() && it->second.tombstoned) {
        ASSERT_THROW(store->read_stream(s), StreamDeleted);
        continue;
      }
      auto reader = store->read_stream(
          s, {.direction = forward ? Direction::forward : Direction::backward, .from = from, .max_count = count});
      bool visible = it != model.streams.end() && it->second.last > it->second.hidden;
      ASSERT_EQ(reader.state() == EventReader::State::ok, visible);
      if (!visible) {
        ASSERT_THROW(reader.next(), StreamNotFound);
        continue;
      }
      std::vector<std::uint64_t> want;
      const auto& m = it->second;
      std::uint64_t start = from ? from->value() : forward ? 1 : kUnlimited;
      if (forward) {
        for (auto v = std::max(start, m.hidden + 1); v <= m.last && want.size() < count; ++v) want.push_back(v);
      } else {
        for (auto v = std::min(start, m.last); v > m.hidden && want.size() < count; --v) want.push_back(v);
      }
      std::vector<std::uint64_t> got;
      for (const auto& e : reader) {
        got.push_back(e.version.value());
        ASSERT_GE(e.version.value(), 1u);
        ASSERT_LE(e.version.value(), m.last);
        const auto& me = model.log[m.positions[e.version.value() - 1] - 1];
        ASSERT_EQ(e.position.value(), me.position);
        ASSERT_EQ(e.id, me.id);
        ASSERT_EQ(e.stream, s);
        ASSERT_EQ(e.type, me.type);
        ASSERT_EQ(e.data, me.data);
      }
      ASSERT_EQ(got, want) << first_difference(got, want) << "; " << (forward ? "forward" : "backward") << " from "
                           << (from ? std::to_string(from->value()) : "default") << " count " << count;
    } else if (op < 93) {
      bool forward = pick(2);
      std::uint64_t head = model.log.size();
      std::uint64_t count = random_count();
      std::optional<Position> from;
      switch (pick(6)) {
        case 0:
          break;  // the default end
        case 1:
          // So that exactly whole pages are left: the reader's last page is full and the next is empty.
          if (forward) {
            from = Position(head >= page ? head - page + 1 : 1);
          } else {
            from = Position(std::min(head, page));
          }
          count = kUnlimited;
          break;
        default:
          from = Position(pick(head + 2));
      }
      std::uint64_t start = from ? from->value() : forward ? 1 : kUnlimited;
      std::vector<std::uint64_t> want;
      if (forward) {
        for (auto p = std::max<std::uint64_t>(start, 1); p <= head && want.size() < count; ++p) want.push_back(p);
      } else {
        for (auto p = std::min<std::uint64_t>(start, head); p >= 1 && want.size() < count; --p) want.push_back(p);
      }
      std::vector<std::uint64_t> got;
      for (const auto& e : store->read_all(
               {.direction = forward ? Direction::forward : Direction::backward, .from = from, .max_count = count})) {
        got.push_back(e.position.value());
        ASSERT_GE(e.position.value(), 1u);
        ASSERT_LE(e.position.value(), head);
        const auto& m = model.log[e.position.value() - 1];
        ASSERT_EQ(e.stream, m.stream);
        ASSERT_EQ(e.version.value(), m.version);
        ASSERT_EQ(e.id, m.id);
        ASSERT_EQ(e.type, m.type);
        ASSERT_EQ(e.data, m.data);
      }
      ASSERT_EQ(got, want) << first_difference(got, want) << "; $all " << (forward ? "forward" : "backward") << " from "
                           << (from ? std::to_string(from->value()) : "default") << " count " << count;
    } else if (op < 97) {
      auto info = store->stream_info(s);
      auto it = model.streams.find(s);
      ASSERT_EQ(info.has_value(), it != model.streams.end());
      if (!info) continue;
      ASSERT_EQ(info->stream, s);
      ASSERT_EQ(info->last_version.value(), it->second.last);
      ASSERT_EQ(info->event_count, it->second.visible());
      ASSERT_EQ(info->status, it->second.status());
    } else {
      // A page of the listing, after a name that may or may not exist.
      std::string after = pick(4) == 0 ? std::string() : names[pick(names.size())];
      if (pick(3) == 0 && !after.empty()) after.pop_back();
      std::size_t limit = 1 + pick(names.size() + 1);
      std::vector<std::string> want;
      for (auto it = model.streams.upper_bound(after); it != model.streams.end() && want.size() < limit; ++it) {
        want.push_back(it->first);
      }
      auto listed = store->list_streams(after, limit);
      std::vector<std::string> got;
      for (const auto& i : listed) {
        got.push_back(i.stream);
        const auto& m = model.streams.at(i.stream);
        ASSERT_EQ(i.last_version.value(), m.last) << i.stream;
        ASSERT_EQ(i.event_count, m.visible()) << i.stream;
        ASSERT_EQ(i.status, m.status()) << i.stream;
      }
      ASSERT_EQ(got, want) << "after '" << after << "' limit " << limit;
    }
  }
  SCOPED_TRACE("seed " + std::to_string(seed) + " at the end (replay with SOURCED_MODEL_SEED=" + std::to_string(seed) +
               ")");
  ASSERT_EQ(store->head_position().value(), model.log.size());
  std::vector<std::string> listed;
  for (const auto& i : store->list_streams()) listed.push_back(i.stream);
  std::vector<std::string> want;
  for (const auto& [name, _] : model.streams) want.push_back(name);
  ASSERT_EQ(listed, want);
}

TEST_P(ModelBased, RandomOperationsAgreeWithTheModel) {
  if (auto why = GetParam().make()->skip_reason()) GTEST_SKIP() << *why;
  std::vector<std::uint64_t> seeds;
  if (auto only = env_u64("SOURCED_MODEL_SEED", 0)) {
    seeds.push_back(only);
  } else {
    for (std::uint64_t s = 1, n = env_u64("SOURCED_MODEL_SEEDS", 20); s <= n; ++s) seeds.push_back(s);
  }
  std::uint64_t steps = env_u64("SOURCED_MODEL_STEPS", 400);
  for (auto seed : seeds) {
    run_seed(seed, steps);
    // The first failing seed is enough: its messages name it, and later seeds would only add noise.
    if (HasFailure()) {
      ADD_FAILURE() << GetParam().name << " disagrees with the model at seed " << seed
                    << "; replay with SOURCED_MODEL_SEED=" << seed;
      return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, ModelBased, ::testing::ValuesIn(all_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
