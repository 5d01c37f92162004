#pragma once
// A read-model store in memory: named tables of key → value (bytes), changed through transactions that
// apply whole or not at all, with the projections' state rows beside them. For tests, for models small
// enough to rebuild at each start, and as the model the SQL stores are compared with.
//
//   sourced::MemoryProjectionStore models;
//   sourced::Projection<sourced::MemoryProjectionTransaction> counts{
//       .name = "counts",
//       .handle = [](auto& tx, const sourced::RecordedEvent& e) {
//         auto n = tx.get("counts", e.stream);
//         tx.put("counts", e.stream, std::to_string(n ? std::stoll(*n) + 1 : 1));
//       },
//       .clear = [](auto& tx) { tx.clear("counts"); }};
//
// Thread-safety: the store may be used from many threads; reads see only committed transactions.
// Transactions do not isolate writers from each other (the last commit of a key wins): one runner per
// projection writes its own tables.

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "sourced/projection.hpp"
#include "sourced/projection_partitions.hpp"

namespace sourced {

class MemoryProjectionStore;

// A transaction of a MemoryProjectionStore: reads see its own writes over the committed tables. Used by
// one thread; the store must outlive it.
class MemoryProjectionTransaction final : public ProjectionTransaction {
 public:
  explicit MemoryProjectionTransaction(MemoryProjectionStore& store) : store_(store) {}

  std::optional<std::string> get(std::string_view table, std::string_view key) const;
  void put(std::string_view table, std::string_view key, std::string value);
  void erase(std::string_view table, std::string_view key);
  // Removes every row of `table`.
  void clear(std::string_view table);

  void save_state(const ProjectionState& state) override;
  void commit() override;
  // Blue/green: the switch is one swap of names under the store's lock (readers see old or new).
  void show_table_as(std::string_view stable, std::string_view table) override;
  void drop_table(std::string_view table) override;
  void save_active_version(std::string_view name, std::uint32_t version) override;
  bool save_state_if(const ProjectionState& state, Position expected) override;
  void record_error(const ProjectionError& error) override;
  void resolve_errors(const ProjectionKey& key, std::string_view resolution, Timestamp at) override;

 private:
  struct TableChanges {
    bool cleared = false;
    std::map<std::string, std::optional<std::string>, std::less<>> rows;  // nullopt: erased
  };
  MemoryProjectionStore& store_;
  std::map<std::string, TableChanges, std::less<>> changes_;
  std::vector<ProjectionState> states_;
  std::map<std::string, std::string, std::less<>> shown_as_;  // stable name → table
  std::vector<std::string> dropped_;
  std::map<std::string, std::uint32_t, std::less<>> active_;
  // Checked again at commit, under the store's lock: the checkpoint each fenced key must still have.
  std::vector<std::pair<ProjectionKey, Position>> fences_;
  std::vector<ProjectionError> errors_;
  std::vector<std::pair<ProjectionKey, std::pair<std::string, Timestamp>>> resolutions_;
  bool committed_ = false;
};

class MemoryProjectionStore final : public ProjectionStore {
 public:
  using Transaction = MemoryProjectionTransaction;
  using Table = std::map<std::string, std::string, std::less<>>;

  std::unique_ptr<ProjectionTransaction> begin_transaction() override;
  std::optional<ProjectionState> load_state(const ProjectionKey& key) override;
  std::vector<ProjectionState> list_states() override;
  // Leases live in this object: they exclude each other within the process that owns it.
  std::unique_ptr<ProjectionLease> try_lease(const ProjectionKey& key) override;
  std::vector<ProjectionError> list_errors(std::string_view name = {}) override;

  std::optional<std::uint32_t> active_version(std::string_view name) override;

  // Reads of a table as committed. `table` may be a stable name a blue/green switch made show a
  // version's table (like a SQL view): the read then sees that table.
  std::optional<std::string> get(std::string_view table, std::string_view key) const;
  // A copy of a table as committed (empty when it has no rows).
  Table table(std::string_view name) const;

 private:
  friend class MemoryProjectionTransaction;
  const Table* find_table(std::string_view name) const;  // under mu_
  mutable std::shared_mutex mu_;
  std::map<std::string, Table, std::less<>> tables_;
  std::map<std::string, std::string, std::less<>> shown_as_;
  std::map<std::string, std::uint32_t, std::less<>> active_;
  std::vector<ProjectionState> states_;
  std::vector<ProjectionError> errors_;
  std::shared_ptr<std::mutex> lease_mu_ = std::make_shared<std::mutex>();
  std::shared_ptr<std::vector<ProjectionKey>> leased_ = std::make_shared<std::vector<ProjectionKey>>();
};

}  // namespace sourced
