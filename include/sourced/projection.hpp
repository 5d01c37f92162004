#pragma once
// Projections: derived state (read models) kept up to date from `$all`, with the checkpoint saved in the
// same transaction as the model's rows, so a crash never applies an event twice or skips one.
//
// A projection is a name, a version, an optional server-side EventFilter and a handler that writes
// through the transaction of a read-model store (MemoryProjectionStore, SqliteProjectionStore,
// PostgresProjectionStore). A ProjectionRunner drives it on its own thread:
//
//   sourced::SqliteProjectionStore models("models.db");
//   sourced::Projection<sourced::SqliteProjectionTransaction> balances{
//       .name = "balances",
//       .filter = sourced::EventFilter{.category = "account"},
//       .handle = [](auto& tx, const sourced::RecordedEvent& e) {
//         tx.execute("INSERT INTO balances(id, n) VALUES (?1, 1) ON CONFLICT(id) DO UPDATE SET n = n + 1",
//                    {e.stream});
//       },
//       .setup = [](auto& tx) { tx.execute("CREATE TABLE IF NOT EXISTS balances(id TEXT PRIMARY KEY, n INT)"); },
//       .clear = [](auto& tx) { tx.execute("DELETE FROM balances"); }};
//   sourced::ProjectionRunner runner(*store, models, balances);   // resumes from its checkpoint
//   runner.wait_for(append_result.last_position, 1s);            // read your writes
//
// The three situations of the Derive seed: rebuild from scratch (StartMode::rebuild: the clear hook, the
// checkpoint reset to 0, a replay), follow new events, resume after a restart or a crash from the saved
// checkpoint (StartMode::resume, the default). docs/projections.md documents the state tables, the batch
// and retry rules and the progress output.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "sourced/clock.hpp"
#include "sourced/event.hpp"
#include "sourced/store.hpp"

namespace sourced {

struct ProjectionError;
class ProjectionLease;

// Whose state row a checkpoint is: a projection's name and version, and its partition ("" for the whole
// log; "0", "1", ... for the partitions of a PartitionedProjectionRunner). Bumping the version makes a new row, so a
// new version can be built beside the old one. A value type.
struct ProjectionKey {
  std::string name;
  std::uint32_t version = 1;
  std::string partition;
  friend bool operator==(const ProjectionKey&, const ProjectionKey&) = default;
};

// What a projection was last doing, as stored in its state row.
enum class ProjectionStatus {
  rebuilding,   // replaying from scratch after a rebuild, not yet caught up
  catching_up,  // resumed from a checkpoint, not yet caught up
  following,    // caught up: applying new events as they come
  retrying,     // a batch failed; the runner waits (back-off) and tries again from the checkpoint
  stopped,      // the runner was stopped cleanly
  failed,       // a batch failed and the runner stopped (OnError::stop, or max_attempts reached)
  retired,      // blue/green: a newer version was switched in for readers; this one no longer runs
};
std::string_view to_string(ProjectionStatus status);
// Parses what to_string() prints; nullopt on anything else.
std::optional<ProjectionStatus> parse_projection_status(std::string_view text);

// A projection's state row. A value type.
struct ProjectionState {
  ProjectionKey key;
  // Every event at or before this position has been applied to the model (or did not pass the filter).
  Position checkpoint;
  ProjectionStatus status = ProjectionStatus::catching_up;
  // The last failure's message (kept after a later success, for inspection); empty when none.
  std::string last_error;
  // Failures in a row: 0 once a batch commits again.
  std::uint32_t attempts = 0;
  Timestamp updated_at;
};

// One transaction of a read-model store: the handler writes through it (each store's own Transaction
// type adds how), and the runner saves the checkpoint in it before committing, so both land or neither.
// Destroying it uncommitted rolls it back. Used by one thread at a time.
class ProjectionTransaction {
 public:
  virtual ~ProjectionTransaction() = default;
  // Writes `state` as part of this transaction (insert or replace its row).
  virtual void save_state(const ProjectionState& state) = 0;
  // Commits; throws (and leaves nothing committed) when the store refuses. Once only.
  virtual void commit() = 0;

  // For the runners' fences and partitions (projection_partitions.hpp). The stores of this library
  // implement them; the defaults throw InvalidArgument (so a store of one's own must implement at least
  // save_state_if: every runner's commit uses it).
  // Writes `state` only when the stored checkpoint of its key is still `expected` (no row counts as 0)
  // and the stored row is not `retired`: the fence that keeps a second runner of a key, or an owner that
  // lost its lease, from committing over the other, and a runner of a version switched away (blue/green)
  // from bringing its row back. The check and the write are one statement. False when it was not written;
  // the caller then drops the transaction (rolled back).
  virtual bool save_state_if(const ProjectionState& state, Position expected);
  // Inserts the error row of (key, position), or reopens and updates it (attempts add up).
  virtual void record_error(const ProjectionError& error);
  // Marks every open error row of `key` resolved ("retried" or "skipped") at `at`.
  virtual void resolve_errors(const ProjectionKey& key, std::string_view resolution, Timestamp at);

  // The table this projection version writes for the model table readers know as `stable`:
  // "<stable>_v<version>" (balances → balances_v2), so that a new version is built beside the old one
  // (blue/green, blue_green.hpp) while readers query `stable`, which shows the active version's table.
  // Needs the projection (set by the runner on each transaction it begins); InvalidArgument otherwise.
  std::string table(std::string_view stable) const;
  // The projection whose transaction this is: the runner sets it, table() uses it.
  void set_projection(const ProjectionKey& key) { projection_ = key; }

  // Blue/green switching, used by BlueGreenRunner (each store implements them; the defaults refuse).
  // Makes readers of `stable` see `table` from this transaction's commit on (SQL stores: a view).
  virtual void show_table_as(std::string_view stable, std::string_view table);
  virtual void drop_table(std::string_view table);
  // Records `version` as the one readers of `name` are served (table sourced_projection_active).
  virtual void save_active_version(std::string_view name, std::uint32_t version);

  // Waits until no other transaction on this read-model database holds the setup lock, then holds it until
  // this transaction ends. Runners take it before a projection's setup (and a rebuild's clear) hook, because
  // PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe when two sessions run it at once (the loser fails on
  // the catalog's unique index): processes starting one projection together take turns instead. PostgreSQL:
  // a transaction-scoped advisory lock. The default does nothing: a SQLite batch holds the database's write
  // lock from its start, and a memory store's transactions take turns already.
  virtual void lock_for_setup() {}

 private:
  std::optional<ProjectionKey> projection_;
};

// The table name ProjectionTransaction::table() gives for a version: "<stable>_v<version>".
std::string versioned_table(std::string_view stable, std::uint32_t version);

// Where read models and their state rows live. Each concrete store names its transaction type
// (`Transaction`), which is what a Projection's hooks receive. Thread-safety: see each store.
class ProjectionStore {
 public:
  virtual ~ProjectionStore() = default;
  virtual std::unique_ptr<ProjectionTransaction> begin_transaction() = 0;
  // The state row of `key`, or nullopt when that projection never ran here.
  virtual std::optional<ProjectionState> load_state(const ProjectionKey& key) = 0;
  // Every state row, ordered by name, version and partition.
  virtual std::vector<ProjectionState> list_states() = 0;
  // Writes one state row in a transaction of its own (what the runner uses to record a failure after
  // rolling a batch back).
  void save_state(const ProjectionState& state);
  // Blue/green: the version of `name` readers are served (switched in last), or nullopt when none was.
  // The default (a store without blue/green) says none.
  virtual std::optional<std::uint32_t> active_version(std::string_view name);

  // For partitions (projection_partitions.hpp); the defaults throw InvalidArgument.
  // The lease of `key`: nullptr when it is held elsewhere (another process, or another lease in this
  // one). Released when the returned object is destroyed, or when the process dies.
  virtual std::unique_ptr<ProjectionLease> try_lease(const ProjectionKey& key);
  // Error rows (table sourced_projection_errors), ordered by name, version, partition and position;
  // only `name`'s when it is not empty.
  virtual std::vector<ProjectionError> list_errors(std::string_view name = {});
};

// A projection: what it reads and how it writes. `Transaction` is the read-model store's transaction type
// (MemoryProjectionTransaction, SqliteProjectionTransaction, PostgresProjectionTransaction). A value type;
// the hooks are called on the runner's thread only, one at a time.
template <class Transaction>
struct Projection {
  std::string name;
  std::uint32_t version = 1;
  // Server-side filter of `$all` (category, stream prefix, event types); every event when unset.
  std::optional<EventFilter> filter;
  // Applies one event. May throw: the batch is rolled back and the runner retries or stops (options).
  std::function<void(Transaction&, const RecordedEvent&)> handle;
  // Once per runner start, in a transaction of its own before anything else: create tables.
  std::function<void(Transaction&)> setup;
  // Rebuild: removes the model's rows; runs in the transaction that resets the checkpoint to 0. A rebuild
  // without it throws InvalidArgument.
  std::function<void(Transaction&)> clear;
  // Around each batch of events, in the batch's transaction: before its first event, and after its last
  // one just before the checkpoint is saved. A handler that buffers (e.g. one row per stream, written once
  // per batch) resets its buffer in begin_batch and writes it in end_batch: a batch that fails is rolled
  // back and replayed, and begin_batch runs again.
  std::function<void(Transaction&)> begin_batch;
  std::function<void(Transaction&)> end_batch;
};

enum class StartMode {
  resume,   // from the saved checkpoint (from the first event when there is none)
  rebuild,  // clear the model, reset the checkpoint, replay everything
};

enum class OnError {
  retry,  // roll back, record the error, wait (back-off), then try again from the checkpoint
  stop,   // roll back, record the error, stop the runner (status failed); a store outage too: fail fast
};

enum class ProgressDisplay {
  automatic,  // while catching up or rebuilding: a bar when stderr is a terminal, else a line every few seconds
  bar,
  lines,
  none,
};

struct ProjectionRunnerOptions {
  StartMode start = StartMode::resume;
  // A batch commits after this many events, after `batch_interval` since its first event, when the
  // runner is live and nothing more has arrived (so following stays prompt), or when the runner stops.
  std::size_t batch_events = 10000;
  std::chrono::milliseconds batch_interval{500};
  OnError on_error = OnError::retry;
  // Back-off between attempts: initial, doubled each failure, capped. Measured on `clock`: the runner waits
  // in real time in short slices and asks the clock again after each, so a test can move time instead.
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{30000};
  // Failures in a row after which the runner stops as failed; 0: retry forever. A lost connection or a
  // transient store error (StorageError::transient(): busy, deadlock, serialization failure, lock timeout)
  // is not the projection's: retried with its own back-off for as long as it lasts, never counted.
  std::uint32_t max_attempts = 0;
  // Stop (status stopped) once caught up with the head: a one-shot rebuild or catch-up.
  bool stop_when_caught_up = false;
  ProgressDisplay progress = ProgressDisplay::automatic;
  // Where the progress bar or lines go (stderr by default); lines come every `progress_interval`.
  std::FILE* progress_stream = nullptr;
  std::chrono::milliseconds progress_interval{5000};
  // Errors and retries are logged here; by default one line each on stderr.
  std::function<void(std::string_view)> log;
  // Batch deadlines, back-off and the progress rate. Default: Clock::steady(). Must outlive the runner.
  Clock* clock = nullptr;
};

// What a runner reports about itself. A value type.
struct ProjectionProgress {
  ProjectionStatus status = ProjectionStatus::catching_up;
  // Processed through here: every event at or before it is applied and committed, or did not pass the
  // filter (a filtered projection moves past events it scanned without applying any).
  Position position;
  // The log's last position, as last read (at most a fraction of a second old).
  Position head;
  // Positions processed per second over the last few seconds.
  double events_per_second = 0;
  // Time to reach the head at that rate; nullopt when unknown (no rate yet).
  std::optional<std::chrono::seconds> eta;
  bool live = false;
  // Events applied since the runner started.
  std::uint64_t events_applied = 0;
  std::string last_error;
  std::uint32_t attempts = 0;
};

enum class WaitResult {
  reached,  // the projection has processed the position
  timeout,  // it had not when the timeout passed; it goes on
  stopped,  // the runner stopped (or failed) before reaching it
};

namespace detail {
// A projection with its transaction type erased: what the runner drives.
struct ErasedProjection {
  ProjectionKey key;
  std::optional<EventFilter> filter;
  std::function<void(ProjectionTransaction&, const RecordedEvent&)> handle;
  std::function<void(ProjectionTransaction&)> setup, clear, begin_batch, end_batch;
};

template <class Transaction>
std::function<void(ProjectionTransaction&)> erase_hook(std::function<void(Transaction&)> f) {
  if (!f) return {};
  return [f = std::move(f)](ProjectionTransaction& tx) { f(static_cast<Transaction&>(tx)); };
}

template <class Transaction>
ErasedProjection erase(Projection<Transaction> p) {
  static_assert(std::is_base_of_v<ProjectionTransaction, Transaction>);
  ErasedProjection e;
  e.key = ProjectionKey{std::move(p.name), p.version, {}};
  e.filter = std::move(p.filter);
  if (p.handle) {
    e.handle = [f = std::move(p.handle)](ProjectionTransaction& tx, const RecordedEvent& ev) {
      f(static_cast<Transaction&>(tx), ev);
    };
  }
  e.setup = erase_hook(std::move(p.setup));
  e.clear = erase_hook(std::move(p.clear));
  e.begin_batch = erase_hook(std::move(p.begin_batch));
  e.end_batch = erase_hook(std::move(p.end_batch));
  return e;
}
}  // namespace detail

// Runs one projection on its own thread: rebuilds or resumes, catches up, then follows new events, until
// stopped. Thread-safe: progress(), wait_for(), stop(), running() and error() may be called from any
// thread. The event store and the read-model store must outlive the runner; stop() (or the destructor)
// returns once the thread has ended, after committing what was applied. Two runners of the same key on one
// read-model database (two processes) are safe but wasteful: each commit is fenced on the checkpoint its
// batch started from, so the slower runner's batch rolls back and it goes on from the other's checkpoint
// (no event applied twice, the checkpoint never goes back). Share work with PartitionedProjectionRunner.
class ProjectionRunner {
 public:
  template <class Store>
  ProjectionRunner(EventStore& events, Store& models, Projection<typename Store::Transaction> projection,
                   ProjectionRunnerOptions options = {})
      : ProjectionRunner(events, static_cast<ProjectionStore&>(models), detail::erase(std::move(projection)),
                         std::move(options)) {}
  ProjectionRunner(EventStore& events, ProjectionStore& models, detail::ErasedProjection projection,
                   ProjectionRunnerOptions options);
  ProjectionRunner(const ProjectionRunner&) = delete;
  ProjectionRunner& operator=(const ProjectionRunner&) = delete;
  ~ProjectionRunner();

  // Commits what is applied, saves status stopped, and returns once the thread has ended.
  void stop();
  bool running() const;
  // Waits until the runner has stopped by itself (stop_when_caught_up, or failed); false on timeout.
  bool wait_until_stopped(std::chrono::milliseconds timeout) const;
  // Why the runner failed, or nullptr.
  std::exception_ptr error() const;
  ProjectionProgress progress() const;
  // Blocks until the projection has processed `position` (see ProjectionProgress::position), `timeout`
  // passes, or the runner stops. Position 0 is reached at once.
  WaitResult wait_for(Position position, std::chrono::milliseconds timeout) const;
  // wait_for() as a function that says whether the position was reached: what the command bus takes
  // for read-your-writes (CommandBus::register_projection). It shares the runner's progress, so it may
  // outlive the runner: then it returns false at once (stopped).
  std::function<bool(Position, std::chrono::milliseconds)> waiter() const;
  const ProjectionKey& key() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace sourced
