#include "sourced/open_store.hpp"

#include <algorithm>
#include <cctype>

#include "sourced/memory_store.hpp"
#include "sourced/sqlite_store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_store.hpp"
#endif

namespace sourced {
namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), s.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         });
}

}  // namespace

std::unique_ptr<EventStore> open_store(std::string_view location, OpenOptions options) {
  if (options.read_only) options.create_if_missing = false;
  if (location == "memory:") return open_memory_store();
  if (starts_with_nocase(location, "postgres://") || starts_with_nocase(location, "postgresql://")) {
#ifdef SOURCED_WITH_POSTGRES
    PostgresOptions pg;
    pg.create_if_missing = options.create_if_missing;
    pg.read_only = options.read_only;
    // libpq accepts the scheme in lower case only.
    std::string url(location);
    for (std::size_t i = 0; url[i] != ':'; ++i)
      url[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(url[i])));
    return open_postgres_store(url, pg);
#else
    throw InvalidArgument("this build of sourced has no PostgreSQL engine (configure with SOURCED_WITH_POSTGRES=ON)");
#endif
  }
  if (starts_with_nocase(location, "sqlite:")) location.remove_prefix(7);
  if (location.empty()) {
    throw InvalidArgument("the store location is empty: give a SQLite file path or a postgres:// URL");
  }
  SqliteOptions sqlite;
  sqlite.create_if_missing = options.create_if_missing;
  sqlite.read_only = options.read_only;
  return open_sqlite_store(std::string(location), sqlite);
}

}  // namespace sourced
