#pragma once
// The PostgreSQL engine: one event store shared by many processes and hosts.
//
//   auto store = sourced::open_postgres_store("postgres://app@db.example:5432/shop");
//
// The URL is a libpq connection URI (https://www.postgresql.org/docs/15/libpq-connect.html), plus two
// query parameters that sourced itself reads and removes before connecting:
//   schema=NAME      the schema that holds the store (default "sourced"; overrides PostgresOptions)
//   pool_size=N      connections kept per store object (overrides PostgresOptions)
//
// Opening creates or migrates the schema when needed (idempotent, safe when several processes open at
// once). Positions in `$all` are gapless in commit order across all processes: appends serialise their
// position assignment on one row until they commit. Within a process, concurrent appends share one
// transaction and one round trip (group commit); a conflicting append in a group fails alone.
// docs/postgres.md describes the schema, the ordering mechanism and the failure behaviour.
//
// Errors: ConnectionError when the server cannot be reached, the URL is invalid or the link breaks (an
// append interrupted that way was committed whole or not at all); StorageError for anything else the
// server refuses (e.g. missing permissions).

#include <cstddef>
#include <memory>
#include <string>

#include "sourced/store.hpp"

namespace sourced {

struct PostgresOptions {
  // Create the schema when it does not exist; when false, a missing schema throws StoreNotFound.
  bool create_if_missing = true;
  // Never create or migrate the schema, nor write (appends and deletes throw InvalidArgument).
  bool read_only = false;
  // The schema that holds the tables. Must be a plain identifier: [a-z_][a-z0-9_]*, at most 63 bytes.
  std::string schema = "sourced";
  // Connections kept open per store object (appends use one at a time; each concurrent read page uses
  // one while it runs).
  std::size_t pool_size = 8;
  // The most events and appends one group commit takes.
  std::size_t max_group_events = 20000;
  std::size_t max_group_appends = 1000;
  // Events fetched per round trip by readers.
  std::size_t read_page_size = 2048;
};

std::unique_ptr<EventStore> open_postgres_store(const std::string& url, PostgresOptions options = {});

}  // namespace sourced
