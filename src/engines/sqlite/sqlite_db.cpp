#include "engines/sqlite/sqlite_db.hpp"

#include <fmt/format.h>

namespace sourced::detail::sqlite {

void throw_error(sqlite3* db, int rc, std::string_view what) {
  const char* file = db ? sqlite3_db_filename(db, "main") : nullptr;
  std::string msg = fmt::format("SQLite store {}: {} failed: {}", file && *file ? file : "(unopened)", what,
                                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  // Another connection held the lock for longer than the busy timeout: repeating the call may succeed.
  int primary = rc & 0xff;
  throw StorageError(msg, primary == SQLITE_BUSY || primary == SQLITE_LOCKED);
}

bool Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  throw_error(db_, rc, sqlite3_sql(stmt_));
}

Connection::Connection(const std::string& path, bool read_only, int busy_timeout_ms) : path_(path) {
  int flags = SQLITE_OPEN_NOMUTEX | (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg =
        fmt::format("cannot open SQLite store '{}': {}", path, db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
    sqlite3_close(db_);
    db_ = nullptr;
    throw StorageError(msg);
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, busy_timeout_ms);
}

Connection::~Connection() {
  cache_.clear();
  sqlite3_close_v2(db_);
}

void Connection::exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    int primary = rc & 0xff;
    throw StorageError(fmt::format("SQLite store '{}': '{}' failed: {}", path_, sql, msg),
                       primary == SQLITE_BUSY || primary == SQLITE_LOCKED);
  }
}

ScopedStatement Connection::prepare(std::string_view sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) return ScopedStatement(*it->second);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) throw_error(db_, rc, fmt::format("preparing '{}'", sql));
  auto owned = std::make_unique<Statement>(db_, stmt);  // finalizes the statement if the insert throws
  auto& slot = cache_[std::string(sql)];
  slot = std::move(owned);
  return ScopedStatement(*slot);
}

ConnectionPool::Lease ConnectionPool::acquire() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(c));
    }
    if (open_ < max_) {
      ++open_;
      lock.unlock();
      try {
        auto c = std::make_unique<Connection>(path_, true, busy_timeout_ms_);
        if (cache_kib_ > 0) c->exec(fmt::format("PRAGMA cache_size=-{}", cache_kib_).c_str());
        return Lease(this, std::move(c));
      } catch (...) {
        lock.lock();
        --open_;
        throw;
      }
    }
    cv_.wait(lock);
  }
}

void ConnectionPool::give_back(std::unique_ptr<Connection> c) {
  std::lock_guard lock(mu_);
  idle_.push_back(std::move(c));
  cv_.notify_one();
}

}  // namespace sourced::detail::sqlite
