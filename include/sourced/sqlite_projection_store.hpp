#pragma once
// A read-model store in a SQLite file: the handler writes the model's tables with SQL through the batch's
// transaction, and the runner saves the checkpoint in the same transaction (table sourced_projections,
// docs/projections.md), so a crash of the process or the machine never applies an event twice or skips
// one. The file may be the event store's own SQLite file or another one, and the events may be in
// PostgreSQL: the guarantee needs only the model's database.
//
//   sourced::SqliteProjectionStore models("models.db");
//   ... .handle = [](sourced::SqliteProjectionTransaction& tx, const sourced::RecordedEvent& e) {
//         tx.execute("UPDATE counts SET n = n + 1 WHERE stream = ?1", {e.stream});
//       }
//
// Sharing the event store's file works, but a batch holds SQLite's write lock from its first write to its
// commit, and appends wait for it meanwhile: a separate file keeps appends and rebuilds apart.
//
// Thread-safety: the store may be used from many threads. It has one write connection: transactions take
// turns (begin_transaction() waits while another is open), so several runners may share one store.
// query() and the state reads use a connection of their own and see committed data only.

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sourced/projection.hpp"
#include "sourced/projection_partitions.hpp"
#include "sourced/projection_sql.hpp"

struct sqlite3;

namespace sourced {

struct SqliteProjectionOptions {
  // synchronous=FULL: a committed batch survives a power loss. false: NORMAL (survives a process crash).
  bool durable = true;
  // Milliseconds to wait for another connection's write lock before failing (transiently).
  int busy_timeout_ms = 10000;
};

class SqliteProjectionStore;

// A batch's transaction on the model's file. Used by the runner's thread only; it holds the store's write
// connection until committed or destroyed (rolled back).
class SqliteProjectionTransaction final : public ProjectionTransaction {
 public:
  ~SqliteProjectionTransaction() override;

  // Runs one statement with `params` bound to ?1, ?2, ... (prepared once per connection and reused);
  // returns the rows it changed. Throws StorageError on failure (a constraint violated, a full disk):
  // the runner then rolls the whole batch back.
  std::int64_t execute(std::string_view sql, std::initializer_list<SqlValue> params = {});
  // Runs a query; `row` is called for each row, in this transaction (it sees the batch's own writes).
  void query(std::string_view sql, std::initializer_list<SqlValue> params,
             const std::function<void(const SqlRow&)>& row);
  // The connection, for what execute() does not cover. Do not begin, commit or roll back through it.
  sqlite3* handle() const;

  void save_state(const ProjectionState& state) override;
  void commit() override;
  // Blue/green: `stable` becomes a view over `table` (dropped and created in this transaction, so readers
  // see the old view or the new one). `stable` must not be a table.
  void show_table_as(std::string_view stable, std::string_view table) override;
  void drop_table(std::string_view table) override;
  void save_active_version(std::string_view name, std::uint32_t version) override;
  bool save_state_if(const ProjectionState& state, Position expected) override;
  void record_error(const ProjectionError& error) override;
  void resolve_errors(const ProjectionKey& key, std::string_view resolution, Timestamp at) override;

  class Impl;
  explicit SqliteProjectionTransaction(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

class SqliteProjectionStore final : public ProjectionStore {
 public:
  using Transaction = SqliteProjectionTransaction;

  // Opens (or creates) the file and the state table. Throws StorageError when it cannot.
  explicit SqliteProjectionStore(const std::string& path, SqliteProjectionOptions options = {});
  ~SqliteProjectionStore() override;

  std::unique_ptr<ProjectionTransaction> begin_transaction() override;
  std::optional<ProjectionState> load_state(const ProjectionKey& key) override;
  std::vector<ProjectionState> list_states() override;
  std::optional<std::uint32_t> active_version(std::string_view name) override;
  // An OFD lock on one byte of the `<file>-leases` file beside the database's real path (the file the
  // event store's subscription leases use; projection locks sit above byte 2^32, clear of theirs).
  std::unique_ptr<ProjectionLease> try_lease(const ProjectionKey& key) override;
  std::vector<ProjectionError> list_errors(std::string_view name = {}) override;

  // Reads the model outside any batch: committed data only.
  void query(std::string_view sql, std::initializer_list<SqlValue> params,
             const std::function<void(const SqlRow&)>& row);
  const std::string& path() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace sourced
