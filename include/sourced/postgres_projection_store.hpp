#pragma once
// A read-model store in PostgreSQL: the handler writes the model's tables with SQL through the batch's
// transaction, and the runner saves the checkpoint in the same transaction (table sourced_projections in
// the store's schema, docs/projections.md), so a crash never applies an event twice or skips one. The
// database may be the event store's or another one, and the events may be in SQLite.
//
//   sourced::PostgresProjectionStore models("postgres://app@db/shop?schema=read_models");
//   ... .handle = [](sourced::PostgresProjectionTransaction& tx, const sourced::RecordedEvent& e) {
//         tx.execute("UPDATE counts SET n = n + 1 WHERE stream = $1", {e.stream});
//       }
//
// Statements are pipelined (libpq pipeline mode): execute() queues a statement and returns at once, and
// the results are read in bulk, so a batch costs a few round trips rather than one per event. An error of
// a queued statement is therefore raised by a later call (a query(), the commit) and fails the batch.
//
// The URL is a libpq URI, plus `schema=NAME` (overrides PostgresProjectionOptions::schema). Connections
// use that schema as their search_path, so the model's unqualified table names land there too.
//
// Thread-safety: the store may be used from many threads. It has one write connection: transactions take
// turns (begin_transaction() waits while another is open). query() and the state reads use a connection
// of their own and see committed data only. A broken connection is replaced at the next transaction.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sourced/projection.hpp"
#include "sourced/projection_partitions.hpp"
#include "sourced/projection_sql.hpp"

namespace sourced {

struct PostgresProjectionOptions {
  // Holds sourced_projections; created when missing. A plain identifier: [a-z_][a-z0-9_]*.
  std::string schema = "public";
  // Statements queued before the batch waits for their results (bounds memory on both sides).
  std::size_t pipeline_depth = 1000;
};

// A batch's transaction. Used by the runner's thread only; it holds the store's write connection until
// committed or destroyed (rolled back).
class PostgresProjectionTransaction final : public ProjectionTransaction {
 public:
  ~PostgresProjectionTransaction() override;

  // Queues one statement with `params` bound to $1, $2, ... (sent as text, typed by the server; prepared
  // once per connection). Errors surface at a later query() or at the commit.
  void execute(std::string_view sql, std::initializer_list<SqlValue> params = {});
  // Runs a query after everything queued; `row` is called for each row (text format), in this
  // transaction. Throws the first error of anything queued before it.
  void query(std::string_view sql, std::initializer_list<SqlValue> params,
             const std::function<void(const SqlRow&)>& row);

  void save_state(const ProjectionState& state) override;
  void commit() override;
  // Blue/green: `stable` becomes a view over `table` (dropped and created in this transaction: a reader
  // waits for the commit, then sees the new view). `stable` must not be a table.
  void show_table_as(std::string_view stable, std::string_view table) override;
  void drop_table(std::string_view table) override;
  void save_active_version(std::string_view name, std::uint32_t version) override;
  // pg_advisory_xact_lock on a key of its own (one per database): queued like any statement.
  void lock_for_setup() override;
  // Waits for what is queued (a round trip): the row count decides.
  bool save_state_if(const ProjectionState& state, Position expected) override;
  void record_error(const ProjectionError& error) override;
  void resolve_errors(const ProjectionKey& key, std::string_view resolution, Timestamp at) override;

  class Impl;
  explicit PostgresProjectionTransaction(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

class PostgresProjectionStore final : public ProjectionStore {
 public:
  using Transaction = PostgresProjectionTransaction;

  // Connects, creates the schema and the state table when missing. Throws ConnectionError or StorageError.
  explicit PostgresProjectionStore(const std::string& url, PostgresProjectionOptions options = {});
  ~PostgresProjectionStore() override;

  std::unique_ptr<ProjectionTransaction> begin_transaction() override;
  std::optional<ProjectionState> load_state(const ProjectionKey& key) override;
  std::vector<ProjectionState> list_states() override;
  std::optional<std::uint32_t> active_version(std::string_view name) override;
  // A session advisory lock (the one-bigint form, a hash of the schema and the key) held by a connection
  // this store keeps for its leases; the server releases it when that session ends, however it ends.
  std::unique_ptr<ProjectionLease> try_lease(const ProjectionKey& key) override;
  std::vector<ProjectionError> list_errors(std::string_view name = {}) override;

  // Reads the model outside any batch: committed data only.
  void query(std::string_view sql, std::initializer_list<SqlValue> params,
             const std::function<void(const SqlRow&)>& row);
  const std::string& schema() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace sourced
