#include "sourced/memory_projection_store.hpp"

#include <algorithm>
#include <tuple>

#include <fmt/format.h>

#include "sourced/error.hpp"

namespace sourced {
namespace {
auto order(const ProjectionKey& k) { return std::tie(k.name, k.version, k.partition); }
}  // namespace

std::optional<std::string> MemoryProjectionTransaction::get(std::string_view table, std::string_view key) const {
  bool cleared = false;
  if (auto t = changes_.find(table); t != changes_.end()) {
    if (auto r = t->second.rows.find(key); r != t->second.rows.end()) return r->second;
    cleared = t->second.cleared;
  }
  if (cleared) return std::nullopt;
  std::shared_lock lock(store_.mu_);
  // The transaction's own tables by their real names: not through the stable names readers use.
  auto t = store_.tables_.find(table);
  if (t == store_.tables_.end()) return std::nullopt;
  auto r = t->second.find(key);
  if (r == t->second.end()) return std::nullopt;
  return r->second;
}

void MemoryProjectionTransaction::show_table_as(std::string_view stable, std::string_view table) {
  shown_as_.insert_or_assign(std::string(stable), std::string(table));
}

void MemoryProjectionTransaction::drop_table(std::string_view table) {
  if (auto t = changes_.find(table); t != changes_.end()) changes_.erase(t);
  dropped_.emplace_back(table);
}

void MemoryProjectionTransaction::save_active_version(std::string_view name, std::uint32_t version) {
  active_.insert_or_assign(std::string(name), version);
}

void MemoryProjectionTransaction::put(std::string_view table, std::string_view key, std::string value) {
  auto t = changes_.find(table);
  if (t == changes_.end()) t = changes_.emplace(std::string(table), TableChanges{}).first;
  t->second.rows.insert_or_assign(std::string(key), std::move(value));
}

void MemoryProjectionTransaction::erase(std::string_view table, std::string_view key) {
  auto t = changes_.find(table);
  if (t == changes_.end()) t = changes_.emplace(std::string(table), TableChanges{}).first;
  t->second.rows.insert_or_assign(std::string(key), std::nullopt);
}

void MemoryProjectionTransaction::clear(std::string_view table) {
  auto t = changes_.find(table);
  if (t == changes_.end()) t = changes_.emplace(std::string(table), TableChanges{}).first;
  t->second.cleared = true;
  t->second.rows.clear();
}

void MemoryProjectionTransaction::save_state(const ProjectionState& state) {
  auto same = [&](const ProjectionState& s) { return s.key == state.key; };
  std::erase_if(states_, same);
  states_.push_back(state);
}

void MemoryProjectionTransaction::commit() {
  if (committed_) throw InvalidArgument("a projection transaction commits once");
  std::unique_lock lock(store_.mu_);
  for (const auto& [key, expected] : fences_) {
    auto it = std::find_if(store_.states_.begin(), store_.states_.end(), [&](auto& o) { return o.key == key; });
    Position now = it == store_.states_.end() ? Position(0) : it->checkpoint;
    if (it != store_.states_.end() && it->status == ProjectionStatus::retired) {
      throw StorageError(fmt::format(
          "projection '{}' v{} partition '{}' was retired (a newer version was switched in); this transaction is not "
          "committed",
          key.name, key.version, key.partition));
    }
    if (now != expected) {
      throw StorageError(
          fmt::format("projection '{}' v{} partition '{}': checkpoint moved from {} to {} by another "
                      "owner; this transaction is not committed",
                      key.name, key.version, key.partition, expected.value(), now.value()));
    }
  }
  for (auto& [name, change] : changes_) {
    auto& table = store_.tables_[name];
    if (change.cleared) table.clear();
    for (auto& [key, value] : change.rows) {
      if (value) {
        table.insert_or_assign(key, std::move(*value));
      } else if (auto it = table.find(key); it != table.end()) {
        table.erase(it);
      }
    }
  }
  for (auto& s : states_) {
    auto it = std::find_if(store_.states_.begin(), store_.states_.end(), [&](auto& o) { return o.key == s.key; });
    if (it != store_.states_.end()) {
      *it = s;
    } else {
      store_.states_.push_back(s);
    }
  }
  std::sort(store_.states_.begin(), store_.states_.end(),
            [](const auto& a, const auto& b) { return order(a.key) < order(b.key); });
  for (auto& t : dropped_) store_.tables_.erase(t);
  for (auto& [stable, table] : shown_as_) store_.shown_as_.insert_or_assign(stable, table);
  for (auto& [name, version] : active_) store_.active_.insert_or_assign(name, version);
  for (auto& e : errors_) {
    auto it = std::find_if(store_.errors_.begin(), store_.errors_.end(),
                           [&](auto& o) { return o.key == e.key && o.position == e.position; });
    if (it != store_.errors_.end()) {
      e.attempts += it->attempts;
      *it = e;
    } else {
      store_.errors_.push_back(e);
    }
  }
  for (auto& [key, how] : resolutions_) {
    for (auto& e : store_.errors_) {
      if (e.key == key && e.resolution.empty()) {
        e.resolution = how.first;
        e.resolved_at = how.second;
      }
    }
  }
  std::sort(store_.errors_.begin(), store_.errors_.end(), [](const auto& a, const auto& b) {
    return std::tuple(order(a.key), a.position) < std::tuple(order(b.key), b.position);
  });
  committed_ = true;
}

bool MemoryProjectionTransaction::save_state_if(const ProjectionState& state, Position expected) {
  auto stored = store_.load_state(state.key);
  // As the SQL stores' statement: never over a retired row (a runner of a version switched away).
  if ((stored ? stored->checkpoint : Position(0)) != expected) return false;
  if (stored && stored->status == ProjectionStatus::retired) return false;
  fences_.emplace_back(state.key, expected);
  save_state(state);
  return true;
}

void MemoryProjectionTransaction::record_error(const ProjectionError& error) {
  std::erase_if(errors_, [&](const auto& e) { return e.key == error.key && e.position == error.position; });
  errors_.push_back(error);
}

void MemoryProjectionTransaction::resolve_errors(const ProjectionKey& key, std::string_view resolution, Timestamp at) {
  resolutions_.emplace_back(key, std::pair(std::string(resolution), at));
}

namespace {
class MemoryLease final : public ProjectionLease {
 public:
  MemoryLease(std::shared_ptr<std::mutex> mu, std::shared_ptr<std::vector<ProjectionKey>> held, ProjectionKey key)
      : mu_(std::move(mu)), held_(std::move(held)), key_(std::move(key)) {}
  ~MemoryLease() override {
    std::lock_guard lock(*mu_);
    std::erase(*held_, key_);
  }
  bool held() override { return true; }

 private:
  std::shared_ptr<std::mutex> mu_;
  std::shared_ptr<std::vector<ProjectionKey>> held_;
  ProjectionKey key_;
};
}  // namespace

std::unique_ptr<ProjectionLease> MemoryProjectionStore::try_lease(const ProjectionKey& key) {
  std::lock_guard lock(*lease_mu_);
  if (std::find(leased_->begin(), leased_->end(), key) != leased_->end()) return nullptr;
  leased_->push_back(key);
  return std::make_unique<MemoryLease>(lease_mu_, leased_, key);
}

std::vector<ProjectionError> MemoryProjectionStore::list_errors(std::string_view name) {
  std::shared_lock lock(mu_);
  std::vector<ProjectionError> out;
  for (const auto& e : errors_) {
    if (name.empty() || e.key.name == name) out.push_back(e);
  }
  return out;
}

std::unique_ptr<ProjectionTransaction> MemoryProjectionStore::begin_transaction() {
  return std::make_unique<MemoryProjectionTransaction>(*this);
}

std::optional<ProjectionState> MemoryProjectionStore::load_state(const ProjectionKey& key) {
  std::shared_lock lock(mu_);
  for (const auto& s : states_) {
    if (s.key == key) return s;
  }
  return std::nullopt;
}

std::vector<ProjectionState> MemoryProjectionStore::list_states() {
  std::shared_lock lock(mu_);
  return states_;
}

std::optional<std::uint32_t> MemoryProjectionStore::active_version(std::string_view name) {
  std::shared_lock lock(mu_);
  auto it = active_.find(name);
  if (it == active_.end()) return std::nullopt;
  return it->second;
}

const MemoryProjectionStore::Table* MemoryProjectionStore::find_table(std::string_view name) const {
  if (auto s = shown_as_.find(name); s != shown_as_.end()) name = s->second;
  auto t = tables_.find(name);
  return t == tables_.end() ? nullptr : &t->second;
}

std::optional<std::string> MemoryProjectionStore::get(std::string_view table, std::string_view key) const {
  std::shared_lock lock(mu_);
  const Table* t = find_table(table);
  if (!t) return std::nullopt;
  auto r = t->find(key);
  if (r == t->end()) return std::nullopt;
  return r->second;
}

MemoryProjectionStore::Table MemoryProjectionStore::table(std::string_view name) const {
  std::shared_lock lock(mu_);
  const Table* t = find_table(name);
  return t ? *t : Table{};
}

}  // namespace sourced
