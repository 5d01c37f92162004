#pragma once
// The PostgreSQL engine's schema: versioned migrations, applied on open (docs/postgres.md shows the
// result). Each migration runs once per schema, in order, in the same transaction as its row in the
// `migrations` table.

#include <string>
#include <vector>

#include "engines/postgres/pg_connection.hpp"

namespace sourced::detail::pg {

struct Migration {
  int version;
  std::string description;
  std::string sql;  // with {schema} standing for the quoted schema name
};

// Every migration, oldest first.
const std::vector<Migration>& migrations();
int latest_schema_version();

// Creates the schema or brings it up to date. Cheap when it already is (one query, no lock, no DDL, so
// a user without CREATE rights can open an initialised store). Concurrent first opens are serialised by
// a transaction-scoped advisory lock. Throws StorageError when the schema is newer than this library, or
// when the user may not create it, StoreNotFound when there is no schema and it may not be created
// (`create_if_missing` false or `read_only`); `read_only` never changes anything, and reads an older
// schema as it is. Returns the schema's version after the call (older than the latest only when read-only).
int migrate(Connection& c, const Target& target, const std::string& schema, bool create_if_missing, bool read_only);

// The channel that commits to `schema` notify (migration 2).
std::string commit_channel(const std::string& schema);

// Replaces every {schema} in `sql` with the quoted schema name.
std::string with_schema(std::string sql, const std::string& schema);

}  // namespace sourced::detail::pg
