#pragma once
// Read-model stores for the projection tests: each harness gives an event store, a read-model store, and
// the same test model on each (one row per stream: events applied, the sum of their positions, the last
// position), so a scenario written once runs on every store and the models compare as text.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "sourced/memory_projection_store.hpp"
#include "sourced/projection.hpp"
#include "store/engines.hpp"

namespace sourced::testing {

using Model = std::map<std::string, std::string>;

// Called by the test model's handler before it writes, so a test can count or fail events.
using BeforeApply = std::function<void(const RecordedEvent&)>;

inline std::string row_text(std::int64_t n, std::int64_t sum, std::int64_t last) {
  return std::to_string(n) + "/" + std::to_string(sum) + "/" + std::to_string(last);
}

// The model built in one clean pass over the log, as the test model's rows (optionally filtered).
inline Model fold(EventStore& store, const std::optional<EventFilter>& filter = std::nullopt,
                  std::uint64_t through = kUnlimited) {
  std::map<std::string, std::array<std::int64_t, 3>> rows;
  for (const auto& e : store.read_all({.filter = filter})) {
    if (e.position.value() > through) break;
    auto& r = rows[e.stream];
    r[0] += 1;
    r[1] += static_cast<std::int64_t>(e.position.value());
    r[2] = static_cast<std::int64_t>(e.position.value());
  }
  Model m;
  for (auto& [k, r] : rows) m[k] = row_text(r[0], r[1], r[2]);
  return m;
}

class MemoryModels {
 public:
  using Store = MemoryProjectionStore;
  using Tx = MemoryProjectionTransaction;
  static constexpr const char* kName = "memory";

  std::optional<std::string> skip_reason() const { return std::nullopt; }
  EventStore& events() { return *events_; }
  Store& models() { return models_; }
  // A fresh object over the same read-model database (the memory store keeps its contents: the nearest
  // thing to a restart it has).
  Store& reopen_models() { return models_; }

  Projection<Tx> projection(std::string name, BeforeApply before = {}) {
    std::string table = name;
    Projection<Tx> p;
    p.name = name;
    p.handle = [table, before](Tx& tx, const RecordedEvent& e) {
      if (before) before(e);
      std::int64_t n = 0, sum = 0;
      if (auto v = tx.get(table, e.stream)) std::sscanf(v->c_str(), "%ld/%ld", &n, &sum);
      tx.put(table, e.stream,
             row_text(n + 1, sum + static_cast<std::int64_t>(e.position.value()),
                      static_cast<std::int64_t>(e.position.value())));
    };
    p.clear = [table](Tx& tx) { tx.clear(table); };
    return p;
  }

  Model model(const std::string& name) {
    Model m;
    for (auto& [k, v] : models_.table(name)) m[k] = v;
    return m;
  }

 private:
  std::unique_ptr<EventStore> events_ = open_memory_store();
  MemoryProjectionStore models_;
};

}  // namespace sourced::testing
