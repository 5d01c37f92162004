#pragma once
// open_store(): opens an event store from a location string, picking the engine from it. This is the engines
// layer: it links every engine built in (memory, SQLite and, when configured, PostgreSQL).
//
//   auto store = sourced::open_store("bank.db");                        // SQLite file, created when missing
//   auto pg = sourced::open_store("postgres://app@db.example/shop");    // PostgreSQL
//   auto ro = sourced::open_store("bank.db", {.create_if_missing = false, .read_only = true});
//
// Thread-safe: any thread may open stores at any time.

#include <memory>
#include <string_view>

#include "sourced/store.hpp"

namespace sourced {

struct OpenOptions {
  // Create the store (a new SQLite file, or the PostgreSQL schema) when it does not exist. When false,
  // opening a store that does not exist throws StoreNotFound and creates nothing.
  bool create_if_missing = true;
  // Open for reading only: nothing is created, migrated or written (appends and deletes throw
  // InvalidArgument). Implies create_if_missing = false. A location that holds something other than a
  // sourced store is refused with StorageError, whatever the mode.
  bool read_only = false;
};

// Opens a store from a location:
//   "memory:"                       a fresh in-memory store (gone when the object is destroyed)
//   "postgres://…", "postgresql://…"  PostgreSQL (a libpq URI, see postgres_store.hpp); the scheme is
//                                     matched without regard to case
//   "sqlite:PATH" or a plain PATH   a SQLite file (see sqlite_store.hpp)
// Throws InvalidArgument for an empty or malformed location, StoreNotFound when the store does not exist
// and may not be created, and what the engine throws when it cannot open it.
std::unique_ptr<EventStore> open_store(std::string_view location, OpenOptions options = {});

}  // namespace sourced
