// sourced_append_floor: the least a one-shot append process can cost here, for the 100-process CLI workload
// (bench/cli.sh, issue 14). It does what `sourced append` of N stdin lines does to a SQLite file and nothing
// else: open (WAL, synchronous=FULL, like the store), one transaction of N inserts into the same two
// tables and indexes, commit (its fdatasync), close keeping the WAL. No sourced library, no C++ runtime
// (only the C API of SQLite and libc), no JSON check: the floor under the CLI, not a replacement for it.
//
//   sourced_append_floor FILE STREAM < lines      (prints the microseconds of each phase to stderr when
//                                                   SOURCED_FLOOR_PHASES is set)

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

namespace {

double now_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int fail(sqlite3* db, const char* what) {
  fprintf(stderr, "sourced_append_floor: %s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
  return 1;
}

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS streams (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL, "
    "version INTEGER NOT NULL, id BLOB NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL, "
    "created_at INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_stream ON events(stream_id, version);"
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events(id);";

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: sourced_append_floor FILE STREAM < lines\n");
    return 2;
  }
  double t0 = now_us();
  // stdin: every line kept (as the CLI keeps each event's bytes until the commit).
  size_t cap = 1 << 20, used = 0;
  char* input = static_cast<char*>(malloc(cap));
  for (size_t n; input && (n = fread(input + used, 1, cap - used, stdin)) > 0;) {
    used += n;
    if (used == cap) input = static_cast<char*>(realloc(input, cap *= 2));
  }
  if (!input) return fail(nullptr, "reading stdin");
  double t1 = now_us();
  sqlite3* db = nullptr;
  if (sqlite3_open(argv[1], &db) != SQLITE_OK) return fail(db, "open");
  // The WAL as the store handles it: no checkpoint at commit, kept at close, truncated by a checkpoint at
  // close once it holds 1,000 pages (src/engines/sqlite/sqlite_store.cpp, keep_wal_on_close).
  sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  int persist = 1;
  sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
  sqlite3_wal_autocheckpoint(db, 0);
  int wal_pages = 0;
  sqlite3_wal_hook(
      db,
      [](void* pages, sqlite3*, const char*, int n) {
        *static_cast<int*>(pages) = n;
        return SQLITE_OK;
      },
      &wal_pages);
  sqlite3_busy_timeout(db, 5000);
  if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", nullptr, nullptr, nullptr) != SQLITE_OK ||
      sqlite3_exec(db, kSchema, nullptr, nullptr, nullptr) != SQLITE_OK) {
    return fail(db, "setup");
  }
  double t2 = now_us();
  sqlite3_stmt* stream = nullptr;
  sqlite3_stmt* insert = nullptr;
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(db, "INSERT INTO streams(name, created_at) VALUES (?1, 0) RETURNING id", -1, &stream,
                         nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(db,
                         "INSERT INTO events(stream_id, version, id, type, data, metadata, created_at) "
                         "VALUES (?1, ?2, ?3, 'Deposited', ?4, '{}', ?5)",
                         -1, &insert, nullptr) != SQLITE_OK) {
    return fail(db, "prepare");
  }
  sqlite3_bind_text(stream, 1, argv[2], -1, SQLITE_STATIC);
  if (sqlite3_step(stream) != SQLITE_ROW) return fail(db, "new stream");
  sqlite3_int64 stream_id = sqlite3_column_int64(stream, 0);
  sqlite3_finalize(stream);
  unsigned char id[16];
  sqlite3_int64 version = 0;
  for (char *line = input, *end = input + used; line < end;) {
    char* nl = static_cast<char*>(memchr(line, '\n', static_cast<size_t>(end - line)));
    if (!nl) nl = end;
    // Time-ordered ids, as the CLI's (UUIDv7): milliseconds first, then a counter, so the unique index
    // on id grows at its right edge as the store's does. Random ids would dirty a page per insert.
    {
      unsigned long long ms = static_cast<unsigned long long>(t0 / 1000),
                         seq = static_cast<unsigned long long>(version);
      for (int b = 0; b < 6; ++b) id[b] = static_cast<unsigned char>(ms >> (40 - 8 * b));
      for (int b = 0; b < 8; ++b) id[6 + b] = static_cast<unsigned char>(seq >> (56 - 8 * b));
      sqlite3_randomness(2, id + 14);
    }
    sqlite3_bind_int64(insert, 1, stream_id);
    sqlite3_bind_int64(insert, 2, ++version);
    sqlite3_bind_blob(insert, 3, id, sizeof id, SQLITE_STATIC);
    sqlite3_bind_blob(insert, 4, line, static_cast<int>(nl - line), SQLITE_STATIC);
    sqlite3_bind_int64(insert, 5, static_cast<sqlite3_int64>(t0));
    if (sqlite3_step(insert) != SQLITE_DONE) return fail(db, "insert");
    sqlite3_reset(insert);
    line = nl + 1;
  }
  sqlite3_finalize(insert);
  double t3 = now_us();
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(db, "commit");
  double t4 = now_us();
  if (wal_pages >= 1000) sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  sqlite3_close(db);
  double t5 = now_us();
  if (getenv("SOURCED_FLOOR_PHASES")) {
    fprintf(stderr, "stdin %.0f open %.0f inserts %.0f commit %.0f close %.0f us\n", t1 - t0, t2 - t1, t3 - t2, t4 - t3,
            t5 - t4);
  }
  free(input);
  return 0;
}
