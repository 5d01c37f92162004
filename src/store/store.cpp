#include "sourced/store.hpp"

#include <fmt/format.h>

#include "sourced/memory_store.hpp"
#include "sourced/sqlite_store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_store.hpp"
#endif

namespace sourced {

std::unique_ptr<EventStore> open_store(std::string_view location) {
  if (location == "memory:") return open_memory_store();
  if (location.starts_with("postgres://") || location.starts_with("postgresql://")) {
#ifdef SOURCED_WITH_POSTGRES
    return open_postgres_store(std::string(location));
#else
    throw InvalidArgument("this build of sourced has no PostgreSQL engine (configure with SOURCED_WITH_POSTGRES=ON)");
#endif
  }
  if (location.starts_with("sqlite:")) location.remove_prefix(7);
  if (location.empty()) throw InvalidArgument("the store location is empty: give a SQLite file path or a postgres:// URL");
  return open_sqlite_store(std::string(location));
}

}  // namespace sourced
