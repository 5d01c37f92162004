#pragma once
// The SQLite engine's subscription registry: tables `subscriptions` and `subscription_parked` in the store
// file (schema 3, docs/sqlite.md), written through the store's group commit, and leases that are OFD
// locks on one byte per subscription of a lock file beside the database, which the kernel releases when
// the process dies.

#include <functional>
#include <memory>
#include <string>

#include "engines/sqlite/sqlite_db.hpp"
#include "sourced/subscription_registry.hpp"

namespace sourced::detail::sqlite {

// Migration 3: the registry's tables.
extern const char* const kRegistrySchema;
inline constexpr int kRegistrySchemaVersion = 3;

// What the registry needs of its store. `write` runs `work` on the writer connection inside a write
// group's transaction and returns when that group committed (rethrowing what `work` threw); `work` sets
// its `writing` flag before its first change, so a failure after it rolls the group back. A group may
// run `work` again (after another request broke the group), so it must read what it needs inside.
struct RegistryHost {
  std::function<void(const std::function<void(Connection&, bool& writing)>& work)> write;
  ConnectionPool* readers = nullptr;
  std::string path;  // the database file; the lock file is its real path + "-leases"
  bool read_only = false;
  int schema_version = 0;  // of the file as opened; below 3 (read-only opens of older files) it has no tables
};

std::unique_ptr<SubscriptionRegistry> make_registry(RegistryHost host);

}  // namespace sourced::detail::sqlite
