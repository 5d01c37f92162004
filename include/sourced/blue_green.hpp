#pragma once
// Blue/green projection versions: bumping a projection's version builds the new version beside the old
// one (its own tables) while the old one keeps following and serving reads; once the new one has caught
// up, it is switched in for readers in one transaction, and the old version's tables are dropped.
//
// Each version writes its own tables, named by tx.table("balances") (balances_v2 for version 2); readers
// query the stable name `balances`, which shows the active version's table (a view in the SQL stores, a
// name swapped under the store's lock in memory). The active version is recorded in the read-model
// database (table sourced_projection_active, docs/projections.md):
//
//   auto balances = [](std::uint32_t version) {
//     return sourced::Projection<sourced::SqliteProjectionTransaction>{
//         .name = "balances", .version = version,
//         .handle = [](auto& tx, const sourced::RecordedEvent& e) {
//           tx.execute("INSERT INTO " + tx.table("balances") + " ...", {...});
//         },
//         .setup = [](auto& tx) { tx.execute("CREATE TABLE IF NOT EXISTS " + tx.table("balances") + " (...)"); },
//         .clear = [](auto& tx) { tx.execute("DELETE FROM " + tx.table("balances")); }};
//   };
//   sourced::BlueGreenRunner runner(*store, models, {balances(1), balances(2)}, {.tables = {"balances"}});
//   runner.wait_until_switched(10min);                  // readers of `balances` now see version 2
//
// The newest of `versions` is the target. When the active version is older, both run: the active one
// keeps following (when its definition is among `versions`; otherwise its tables serve as they are), the
// target resumes from its own checkpoint (after a crash too) and, once it is live and has reached the
// head read at that moment, the switch runs: the old runner stops, then one transaction points the
// stable names at the target's tables, records the target as active and marks the old version's state
// rows retired (fenced: when a runner of the old version elsewhere committed meanwhile, the target first
// catches up with that too); the old tables are dropped in a later transaction. Before any version is active, readers
// find no stable name: the first version is switched in once caught up like any other, so a reader never
// sees a half-built model. When the target is already active, it simply runs (and drops the tables of
// retired versions a crash left behind). An active version newer than the target is refused.
//
// Across processes: every process running the projection should use a BlueGreenRunner. One running the
// active version notices a newer version switched in elsewhere (polling sourced_projection_active) and
// stops, leaving its state rows retired. A plain runner of the old version elsewhere stops at its next
// commit: a fenced save never writes over a retired row.
//
// Partitioned projections (options.partitioned) switch the same way: each version runs as a
// PartitionedProjectionRunner, the target is switched in once every partition has reached the head and
// the old version's last checkpoints, and the switch retires every partition row of the old version in
// the transaction that moves the stable names.
//
// Thread-safety: every member may be called from any thread. The event store and the read-model store
// must outlive the runner; stop() (or the destructor) stops both versions' runners and returns once done.

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sourced/projection.hpp"
#include "sourced/projection_partitions.hpp"

namespace sourced {

struct BlueGreenOptions {
  // The stable names of the model's tables (what readers query); each version writes tx.table(name).
  // At least one.
  std::vector<std::string> tables;
  // For each version's runner. `start` is ignored: each version resumes from its own checkpoint (a new
  // version without one starts from the first event).
  ProjectionRunnerOptions runner;
  // When set, every version runs as a PartitionedProjectionRunner with these options (`runner` is then
  // unused; `start` and `stop_when_caught_up` are ignored): the target counts as caught up once every
  // partition has reached the head, and the switch retires every partition's state row of the old version.
  // Processes running the same projection share the partitions of both versions through their leases.
  std::optional<PartitionedRunnerOptions> partitioned;
  // Drop the old version's tables after the switch. false: they stay for inspection (the state row says
  // retired either way).
  bool drop_old_tables = true;
  // How often the switch is checked for: the target catching up, another process switching.
  std::chrono::milliseconds poll{50};
  // How long the target may take, once live, to reach the head read just before the switch; the switch is
  // tried again later when it has not.
  std::chrono::milliseconds catch_up_timeout{5000};
};

class BlueGreenRunner {
 public:
  // Starts the runners (see the top of this header). Throws InvalidArgument when `versions` is empty, has
  // two names or two equal versions, `options.tables` is empty, or the active version is newer than the
  // target.
  template <class Store>
  BlueGreenRunner(EventStore& events, Store& models, std::vector<Projection<typename Store::Transaction>> versions,
                  BlueGreenOptions options)
      : BlueGreenRunner(events, static_cast<ProjectionStore&>(models), erase_all(std::move(versions)),
                        std::move(options)) {}
  BlueGreenRunner(EventStore& events, ProjectionStore& models, std::vector<detail::ErasedProjection> versions,
                  BlueGreenOptions options);
  BlueGreenRunner(const BlueGreenRunner&) = delete;
  BlueGreenRunner& operator=(const BlueGreenRunner&) = delete;
  ~BlueGreenRunner();

  // Stops every runner (each commits what it applied) and returns once they have ended.
  void stop();
  // The version this runner builds and switches to (the newest it was given).
  std::uint32_t target_version() const;
  // The version readers are served, as this runner last knew it; nullopt before the first switch.
  std::optional<std::uint32_t> active_version() const;
  // Blocks until the target is the active version; false on timeout, or when the runner stopped or failed
  // first (see error()).
  bool wait_until_switched(std::chrono::milliseconds timeout) const;
  // Waits until the version readers are served has processed `position`: before the switch the active
  // version's runner when this process runs it (else the target's), after it the target's.
  WaitResult wait_for(Position position, std::chrono::milliseconds timeout) const;
  // wait_for() as the command bus takes it (CommandBus::register_projection). May outlive the runner.
  std::function<bool(Position, std::chrono::milliseconds)> waiter() const;
  // The target's progress while it builds, then the active version's.
  ProjectionProgress progress() const;
  // Why the target's runner failed, or nullptr (a failed switch is retried, and logged).
  std::exception_ptr error() const;

  class Impl;

 private:
  template <class Transaction>
  static std::vector<detail::ErasedProjection> erase_all(std::vector<Projection<Transaction>> versions) {
    std::vector<detail::ErasedProjection> out;
    for (auto& p : versions) out.push_back(detail::erase(std::move(p)));
    return out;
  }

  std::shared_ptr<Impl> impl_;
};

}  // namespace sourced
