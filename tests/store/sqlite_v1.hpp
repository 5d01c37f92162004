#pragma once
// SQLite store files as version 1 of the schema wrote them (the DDL of migration 1, before content types
// existed), built by hand for the tests of what today's code does with them: a read-only open reads them
// as they are (events of unknown content type), a writing open migrates them.

#include <string>

#include <gtest/gtest.h>
#include <sqlite3.h>

namespace sourced::testing {

// Writes a version-1 store at `path` holding `rows` (INSERTs into streams and events). Without
// `application_id` it is a store made before the file carried one (recognised by its version and tables).
inline void write_version_1_store(const std::string& path, const std::string& rows, bool application_id = true) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  std::string sql = R"sql(
    PRAGMA journal_mode=WAL;
    CREATE TABLE streams (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
      hidden_through INTEGER NOT NULL DEFAULT 0, tombstoned INTEGER NOT NULL DEFAULT 0,
      created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
    CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL REFERENCES streams(id),
      version INTEGER NOT NULL, id BLOB NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL,
      correlation_id BLOB, causation_id BLOB, created_at INTEGER NOT NULL);
    CREATE UNIQUE INDEX events_by_stream ON events(stream_id, version);
    CREATE UNIQUE INDEX events_by_id ON events(id);
    PRAGMA user_version = 1;
  )sql";
  sql += rows;
  if (application_id) sql += "; PRAGMA application_id = 1397900100;";
  char* error = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  std::string message = error ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << message;
}

// The file's schema version (PRAGMA user_version).
inline int user_version(const std::string& path) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr);
  sqlite3_step(st);
  int v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

}  // namespace sourced::testing
