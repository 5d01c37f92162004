#pragma once
// Thin RAII wrappers over the SQLite C API: a connection with a cache of prepared statements (each use
// scoped by a guard that resets it), and a pool of connections for readers. Errors become
// sourced::StorageError naming the file.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <sqlite3.h>

#include "sourced/error.hpp"

namespace sourced::detail::sqlite {

class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  // Resets the statement and clears its bindings, ready for a new use. Ends any read it was doing.
  Statement& reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    return *this;
  }
  Statement& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& bind_text(int i, std::string_view v) {
    // A default string_view has a null data pointer, which SQLite would bind as NULL.
    sqlite3_bind_text(stmt_, i, v.data() ? v.data() : "", static_cast<int>(v.size()), SQLITE_STATIC);
    return *this;
  }
  Statement& bind_blob(int i, const void* p, std::size_t n) {
    sqlite3_bind_blob(stmt_, i, n ? p : "", static_cast<int>(n), SQLITE_STATIC);
    return *this;
  }
  Statement& bind_null(int i) {
    sqlite3_bind_null(stmt_, i);
    return *this;
  }
  // True when a row is ready; false when done. Throws on error.
  bool step();
  // Runs to completion, ignoring rows.
  void run() {
    while (step()) {
    }
  }

  // For what the helpers here do not cover (the projections layer binds and reads reals, counts columns).
  sqlite3_stmt* handle() const { return stmt_; }
  std::int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string_view text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string_view(p, sqlite3_column_bytes(stmt_, col)) : std::string_view();
  }
  std::string_view blob(int col) const {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p ? std::string_view(p, sqlite3_column_bytes(stmt_, col)) : std::string_view();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

// One use of a cached statement: resets it when the scope ends, however it ends. A statement left
// mid-result keeps its read transaction open, and in WAL mode an open read snapshot stops checkpoints
// from finishing, so a pooled connection must never go back to the pool with one.
class ScopedStatement {
 public:
  explicit ScopedStatement(Statement& st) : st_(&st) {}
  ScopedStatement(const ScopedStatement&) = delete;
  ScopedStatement& operator=(const ScopedStatement&) = delete;
  ~ScopedStatement() { st_->reset(); }
  Statement* operator->() const { return st_; }
  Statement& operator*() const { return *st_; }

 private:
  Statement* st_;
};

class Connection {
 public:
  Connection(const std::string& path, bool read_only, int busy_timeout_ms);
  Connection(const Connection&) = delete;
  ~Connection();

  void exec(const char* sql);
  // The cached prepared statement for `sql` (keyed on the text), ready to bind, for the guard's scope.
  // One guard per statement at a time: a statement cannot run twice at once.
  [[nodiscard]] ScopedStatement prepare(std::string_view sql);
  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::unique_ptr<Statement>, TextHash, std::equal_to<>> cache_;
};

[[noreturn]] void throw_error(sqlite3* db, int rc, std::string_view what);

class ConnectionPool {
 public:
  // `cache_kib`: each connection's page cache (SqliteOptions::read_cache_kib); 0 keeps SQLite's default.
  ConnectionPool(std::string path, std::size_t max, int busy_timeout_ms, int cache_kib = 0)
      : path_(std::move(path)), max_(max ? max : 1), busy_timeout_ms_(busy_timeout_ms), cache_kib_(cache_kib) {}

  class Lease {
   public:
    Lease(ConnectionPool* pool, std::unique_ptr<Connection> c) : pool_(pool), conn_(std::move(c)) {}
    Lease(Lease&&) = default;
    ~Lease() {
      if (conn_) pool_->give_back(std::move(conn_));
    }
    Connection* operator->() const { return conn_.get(); }
    Connection& operator*() const { return *conn_; }

   private:
    ConnectionPool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  Lease acquire();

 private:
  void give_back(std::unique_ptr<Connection> c);

  std::string path_;
  std::size_t max_;
  int busy_timeout_ms_;
  int cache_kib_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_ = 0;
};

}  // namespace sourced::detail::sqlite
