#pragma once
// The SQLite engine: the embedded default. One file (plus its WAL while open), nothing to start.
//
// Several processes may open the same file; writes are serialised by SQLite's lock. Within a process,
// concurrent appends share one transaction and one sync (group commit); a conflicting append in a group
// fails alone. The schema is documented in docs/sqlite.md.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "sourced/store.hpp"

namespace sourced {

struct SqliteOptions {
  // Create the file (and the store's tables) when it does not exist; when false, a missing file throws
  // StoreNotFound and nothing is created.
  bool create_if_missing = true;
  // Open for reading only: no file is created, no schema migrated, nothing written (appends and deletes
  // throw InvalidArgument). SQLite may still create the -wal and -shm files a WAL database needs to be read.
  bool read_only = false;
  // synchronous=FULL: an acknowledged append survives a power loss. false uses NORMAL, which survives
  // a crash of the process but not of the machine.
  bool durable = true;
  // Connections kept for concurrent readers.
  std::size_t read_connections = 8;
  // Each reader connection's page cache, in KiB (SQLite's cache_size); 0 keeps SQLite's default, 2,000 KiB.
  // A long forward read of `$all` reuses none of it, while a new process pays a page fault for every 4 KiB
  // of it the first time it fills (~10 us each in a VM: ~10 ms of a 100,000-event read, where the read
  // itself takes ~70 ms). A one-shot reader such as the `sourced` CLI asks for little; a long-running
  // process that reads the same streams again gains from the default or more. Less than 0 is refused
  // with InvalidArgument.
  int read_cache_kib = 0;
  // The most events one group commit takes.
  std::size_t max_group_events = 20000;
  // Milliseconds to wait for another process's write lock before failing.
  int busy_timeout_ms = 10000;
  // The most the database file may grow to, in bytes (0: no limit; SQLite's max_page_count). An append
  // that would pass it fails with StorageError ("database or disk is full") and writes nothing; appends
  // grouped with it go on. It cannot shrink a file already larger, and does not bound the WAL file.
  std::uint64_t max_size_bytes = 0;
};

// Opens (or creates) the store in the SQLite file at `path`. A file that holds another program's database
// (tables but not this store's), or that is not a SQLite database at all, is refused with StorageError and
// left unchanged; an empty file becomes a store unless read_only.
std::unique_ptr<EventStore> open_sqlite_store(const std::string& path, SqliteOptions options = {});

}  // namespace sourced
