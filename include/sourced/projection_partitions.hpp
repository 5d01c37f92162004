#pragma once
// Partitioned projections: a key function (by default the stream id) sends each event to one of N
// partitions; each partition keeps the order of its events, has its own state row (ProjectionKey::partition
// "0" ... "N-1") and checkpoint, and fails on its own: a partition whose handler keeps throwing stops, its
// error goes to the errors table of the read-model database (sourced_projection_errors), and the other
// partitions go on. A stopped partition is retried, or its failing event skipped, through
// retry_partition() / skip_partition_event() (from any process, e.g. the CLI) or the runner.
//
//   sourced::PartitionedProjectionRunner runner(*store, models, balances, {.partitions = 8});
//   runner.wait_for(result.last_position, 1s);  // every partition has processed it
//
// Across processes: every process running the same projection on the same read-model database shares
// its partitions. A partition is worked by whoever holds its lease (ProjectionStore::try_lease:
// PostgreSQL session advisory locks, OFD locks on the `<models db>-leases` file for SQLite, in-process
// for the memory store); the lease dies with its process, and the others take the partition over within
// `takeover_interval`. The state row's save is fenced (ProjectionTransaction::save_state_if): an owner
// that lost its lease cannot commit over the new owner, so nothing is applied twice or skipped.
// docs/projections.md describes the tables and the rules.

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sourced/projection.hpp"

namespace sourced {

// One row of sourced_projection_errors: the event a partition stopped on (or the batch, when the failure
// was not an event's: then event_id is empty and position is where the batch ended). A value type.
struct ProjectionError {
  ProjectionKey key;
  Position position;
  std::string event_id;  // empty when no single event failed (a commit, a setup)
  std::string stream;
  std::string event_type;
  std::string message;
  std::uint32_t attempts = 0;
  Timestamp failed_at;
  // "" while open; "retried" or "skipped" once resolved.
  std::string resolution;
  std::optional<Timestamp> resolved_at;
};

// A lease on one projection key, from ProjectionStore::try_lease. Released when destroyed (or when the
// process dies). Used by one thread at a time; the store must outlive it.
class ProjectionLease {
 public:
  virtual ~ProjectionLease() = default;
  // False once the lease is known lost (a PostgreSQL session that ended); may ask the database.
  virtual bool held() = 0;
};

struct PartitionedRunnerOptions {
  // How many partitions; fixed for a projection's name and version (a different count needs a new version
  // or a rebuild: the runner refuses to start over state rows of another count).
  std::uint32_t partitions = 4;
  // The partition key of an event; the stream id when unset. Events with one key keep their order.
  std::function<std::string(const RecordedEvent&)> key;
  // resume (default) or rebuild: a rebuild takes every partition's lease (waiting for other processes to
  // let go, up to `lease_wait`), clears the model and resets every partition's checkpoint in one transaction.
  StartMode start = StartMode::resume;
  std::chrono::milliseconds lease_wait{30000};
  // A partition's batches: as ProjectionRunnerOptions.
  std::size_t batch_events = 10000;
  std::chrono::milliseconds batch_interval{500};
  // A failing partition tries again (back-off from retry_initial, doubled, capped at retry_max) until it
  // has failed `max_attempts` times in a row on the same event, then stops (status failed, an error row).
  // A failure in a batch of several events is first narrowed down to the event that fails (that event
  // alone, its predecessors committed), whatever max_attempts, so a skip never skips more than it.
  // A lost connection or a transient store error (StorageError::transient(): busy, deadlock, serialization
  // failure, lock timeout) is not the event's: retried the same way for as long as it lasts, never counted.
  std::uint32_t max_attempts = 3;
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{5000};
  // A partition worker with nothing to do for this long (caught up) commits and ends, letting go of its
  // lease; it starts again when events for its partition arrive.
  std::chrono::milliseconds idle_shutdown{30000};
  // How often partitions held by nobody (a killed owner's, a retried one) are looked for, and how often
  // the state rows of partitions worked elsewhere are read (for wait_for and progress).
  std::chrono::milliseconds takeover_interval{1000};
  // Stop once every partition has caught up with the head (or failed): a one-shot rebuild or catch-up.
  bool stop_when_caught_up = false;
  ProgressDisplay progress = ProgressDisplay::automatic;
  std::FILE* progress_stream = nullptr;
  std::chrono::milliseconds progress_interval{5000};
  std::function<void(std::string_view)> log;
  // Called (on a runner thread) when this process takes or lets go of a partition's lease; for tests
  // and monitoring.
  std::function<void(std::uint32_t partition, bool taken)> on_lease;
  Clock* clock = nullptr;
};

// One partition as a runner sees it. A value type.
struct PartitionProgress {
  std::uint32_t partition = 0;
  // Processed through here (applied and committed, or known to hold no event of this partition).
  Position position;
  ProjectionStatus status = ProjectionStatus::catching_up;
  bool worked_here = false;  // this process holds its lease and runs its worker
  std::string last_error;
};

struct PartitionedProgress {
  ProjectionProgress total;  // position: the least partition position
  std::vector<PartitionProgress> partitions;
};

// Runs a partitioned projection: a thread that follows the log to see which partitions have work, and
// one worker thread per partition with work whose lease this process holds. Thread-safety: every method
// may be called from any thread. The stores must outlive the runner; stop() (or the destructor) commits
// what is applied and returns once every thread has ended.
class PartitionedProjectionRunner {
 public:
  template <class Store>
  PartitionedProjectionRunner(EventStore& events, Store& models, Projection<typename Store::Transaction> projection,
                              PartitionedRunnerOptions options = {})
      : PartitionedProjectionRunner(events, static_cast<ProjectionStore&>(models), detail::erase(std::move(projection)),
                                    std::move(options)) {}
  PartitionedProjectionRunner(EventStore& events, ProjectionStore& models, detail::ErasedProjection projection,
                              PartitionedRunnerOptions options);
  PartitionedProjectionRunner(const PartitionedProjectionRunner&) = delete;
  PartitionedProjectionRunner& operator=(const PartitionedProjectionRunner&) = delete;
  ~PartitionedProjectionRunner();

  void stop();
  bool running() const;
  bool wait_until_stopped(std::chrono::milliseconds timeout) const;
  // Why the runner itself failed (not a partition: those are in progress() and the errors table). Store
  // errors are retried with back-off for as long as it takes; only what retrying cannot mend ends the run
  // (another partition count, a rebuild that could not get every lease, the key function throwing).
  std::exception_ptr error() const;
  PartitionedProgress progress() const;
  // Blocks until every partition has processed `position`, `timeout` passes (timeout), or the runner
  // stops or a partition that has events at or before it has failed (stopped). Partitions worked by
  // other processes are seen through their state rows (read every takeover_interval).
  WaitResult wait_for(Position position, std::chrono::milliseconds timeout) const;
  // retry_partition() / skip_partition_event() on this runner's store, then the partition starts again.
  void retry(std::uint32_t partition);
  ProjectionError skip(std::uint32_t partition);
  // The partition an event belongs to.
  std::uint32_t partition_of(const RecordedEvent& event) const;
  const ProjectionKey& key() const;  // partition ""

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// The partition of `key` among `partitions` (a stable hash: every process agrees).
std::uint32_t partition_for(std::string_view key, std::uint32_t partitions);

// A failed partition (status failed) goes back to work: its status becomes catching_up, its attempts 0,
// its open error rows "retried"; a runner (in any process) picks it up. Throws InvalidArgument naming the
// projection and partition when it has no state row or has not failed.
void retry_partition(ProjectionStore& models, const ProjectionKey& key);
// A failed partition moves past the event it failed on: its checkpoint becomes that event's position (in
// the same transaction the error row is marked "skipped"), then it goes back to work as retry_partition()
// does. Returns the skipped error row. Throws InvalidArgument when the partition has not failed on an
// event (a failed commit: retry it instead).
ProjectionError skip_partition_event(ProjectionStore& models, const ProjectionKey& key);

}  // namespace sourced
