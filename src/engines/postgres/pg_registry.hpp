#pragma once
// The PostgreSQL engine's subscription registry: tables `subscriptions` and `subscription_parked` in the
// store's schema (migration 4, docs/postgres.md), and leases that are session advisory locks held by a
// connection of their own, which the server releases when that connection or its process dies.

#include <memory>
#include <string>

#include "engines/postgres/pg_connection.hpp"
#include "sourced/subscription_registry.hpp"

namespace sourced::detail::pg {

inline constexpr int kRegistrySchemaVersion = 4;

struct RegistryHost {
  Pool* pool = nullptr;  // the store's pool, for reads and writes; outlives the registry
  std::string schema;
  bool read_only = false;
  int schema_version = 0;  // of the schema as opened; below 4 (read-only opens of older schemas) it has no tables
};

std::unique_ptr<SubscriptionRegistry> make_registry(RegistryHost host);

}  // namespace sourced::detail::pg
