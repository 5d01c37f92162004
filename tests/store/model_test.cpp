// Model-based test: random sequences of appends, deletes and reads run on each engine and on a tiny
// model written here; every outcome (result or error) and every read must agree.

#include <map>
#include <random>

#include <gtest/gtest.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

struct ModelEvent {
  Uuid id;
  std::string stream;
  std::uint64_t version;
  std::uint64_t position;
  std::string type;
};

struct ModelStream {
  std::uint64_t last = 0;
  std::uint64_t hidden = 0;
  bool tombstoned = false;
  std::vector<std::uint64_t> positions;  // index version-1
};

struct Model {
  std::map<std::string, ModelStream> streams;
  std::vector<ModelEvent> log;
  std::map<Uuid, std::uint64_t> ids;

  // Returns the error code, or nullopt and the result.
  std::optional<ErrorCode> append(const std::string& s, ExpectedVersion ev, const std::vector<EventData>& events,
                                  AppendResult& out) {
    ModelStream* st = streams.count(s) ? &streams[s] : nullptr;
    if (st && st->tombstoned) return ErrorCode::stream_deleted;
    std::uint64_t last = st ? st->last : 0;
    bool visible = st && st->last > st->hidden;
    // Idempotency: all caller ids found, same stream, contiguous.
    std::size_t found = 0;
    for (const auto& e : events) found += ids.count(*e.id);
    if (found > 0) {
      if (found != events.size()) return ErrorCode::duplicate_event_id;
      const ModelEvent& first = log[ids[*events[0].id] - 1];
      for (std::size_t i = 0; i < events.size(); ++i) {
        const ModelEvent& e = log[ids[*events[i].id] - 1];
        if (e.stream != s || e.version != first.version + i) return ErrorCode::duplicate_event_id;
      }
      bool matches = ev.kind() == ExpectedVersion::Kind::any || ev.kind() == ExpectedVersion::Kind::stream_exists ||
                     (ev.kind() == ExpectedVersion::Kind::no_stream &&
                      (first.version == 1 || first.version - 1 == (st ? st->hidden : 0))) ||
                     (ev.kind() == ExpectedVersion::Kind::exact && ev.version().value() + 1 == first.version);
      if (!matches) {
        if (!expected_ok(ev, last, visible)) return ErrorCode::wrong_expected_version;
        return ErrorCode::duplicate_event_id;
      }
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
      log.push_back({*e.id, s, w.last, log.size() + 1, e.type});
      w.positions.push_back(log.size());
      ids[*e.id] = log.size();
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

class ModelBased : public ::testing::TestWithParam<EngineParam> {};

TEST_P(ModelBased, RandomOperationsAgreeWithTheModel) {
  auto harness = GetParam().make();
  if (auto why = harness->skip_reason()) GTEST_SKIP() << *why;
  auto store = harness->open();
  Model model;
  std::mt19937_64 rng(20261125);
  auto pick = [&](std::uint64_t n) { return static_cast<std::uint64_t>(rng() % n); };
  std::vector<std::pair<std::string, std::vector<EventData>>> history;  // earlier appends, to repeat
  const std::vector<std::string> names = {"a-1", "a-2", "b-1", "b-2", "c"};

  for (int step = 0; step < 3000; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
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
    if (op < 60) {
      std::vector<EventData> events;
      std::string target = s;
      if (!history.empty() && pick(8) == 0) {
        auto& h = history[pick(history.size())];
        events = h.second;
        if (pick(2)) target = h.first;
      } else {
        for (std::uint64_t i = 0, n = pick(4); i < n; ++i) {
          events.push_back(event_with_id("T" + std::to_string(pick(3)), Uuid::v4()));
        }
      }
      auto ev = random_expected();
      AppendResult expected_result;
      auto model_error = model.append(target, ev, events, expected_result);
      try {
        auto r = store->append(target, ev, events);
        ASSERT_FALSE(model_error) << "engine appended, model said error " << static_cast<int>(*model_error);
        EXPECT_EQ(r.first_version, expected_result.first_version);
        EXPECT_EQ(r.last_version, expected_result.last_version);
        EXPECT_EQ(r.first_position, expected_result.first_position);
        EXPECT_EQ(r.last_position, expected_result.last_position);
        EXPECT_EQ(r.replayed, expected_result.replayed);
        if (!events.empty() && !r.replayed) history.emplace_back(target, events);
      } catch (const Error& e) {
        ASSERT_TRUE(model_error) << "engine failed: " << e.what();
        ASSERT_EQ(e.code(), *model_error) << e.what();
      }
    } else if (op < 66) {
      auto mode = pick(6) == 0 ? DeleteMode::tombstone : DeleteMode::soft;
      auto ev = random_expected();
      auto model_error = model.remove(s, ev, mode);
      try {
        store->delete_stream(s, ev, mode);
        ASSERT_FALSE(model_error);
      } catch (const Error& e) {
        ASSERT_TRUE(model_error) << e.what();
        ASSERT_EQ(e.code(), *model_error) << e.what();
      }
    } else if (op < 90) {
      bool forward = pick(2);
      std::uint64_t from = pick(current + 3);
      std::uint64_t count = 1 + pick(6);
      auto it = model.streams.find(s);
      if (it != model.streams.end() && it->second.tombstoned) {
        EXPECT_THROW(store->read_stream(s), StreamDeleted);
        continue;
      }
      auto reader = store->read_stream(s, {.direction = forward ? Direction::forward : Direction::backward,
                                           .from = StreamVersion(from),
                                           .max_count = count});
      bool visible = it != model.streams.end() && it->second.last > it->second.hidden;
      ASSERT_EQ(reader.state() == EventReader::State::ok, visible);
      if (!visible) continue;
      std::vector<std::uint64_t> want;
      const auto& ms = it->second;
      if (forward) {
        for (auto v = std::max(from, ms.hidden + 1); v <= ms.last && want.size() < count; ++v) want.push_back(v);
      } else {
        for (auto v = std::min(from, ms.last); v > ms.hidden && want.size() < count; --v) want.push_back(v);
      }
      std::vector<std::uint64_t> got;
      for (const auto& e : reader) {
        got.push_back(e.version.value());
        EXPECT_EQ(e.position.value(), ms.positions[e.version.value() - 1]);
        EXPECT_EQ(e.id, model.log[e.position.value() - 1].id);
      }
      ASSERT_EQ(got, want);
    } else {
      std::uint64_t from = pick(model.log.size() + 2);
      std::uint64_t count = 1 + pick(10);
      bool forward = pick(2);
      std::vector<std::uint64_t> want;
      if (forward) {
        for (auto p = std::max<std::uint64_t>(from, 1); p <= model.log.size() && want.size() < count; ++p)
          want.push_back(p);
      } else {
        for (auto p = std::min<std::uint64_t>(from, model.log.size()); p >= 1 && want.size() < count; --p)
          want.push_back(p);
      }
      std::vector<std::uint64_t> got;
      for (const auto& e : store->read_all({.direction = forward ? Direction::forward : Direction::backward,
                           .from = Position(from),
                           .max_count = count})) {
        got.push_back(e.position.value());
        const auto& m = model.log[e.position.value() - 1];
        EXPECT_EQ(e.stream, m.stream);
        EXPECT_EQ(e.version.value(), m.version);
        EXPECT_EQ(e.type, m.type);
      }
      ASSERT_EQ(got, want);
    }
  }
  EXPECT_EQ(store->head_position().value(), model.log.size());
}

INSTANTIATE_TEST_SUITE_P(Engines, ModelBased, ::testing::ValuesIn(all_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
