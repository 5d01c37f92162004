// sourced projections: every projection recorded in a read-model database, with its lag against the
// event store (the listing of sourced/projection_cli.hpp, which applications mount with their projections).

#include <filesystem>

#include "commands.hpp"
#include "sourced/memory_store.hpp"
#include "sourced/projection_cli.hpp"
#include "sourced/sqlite_projection_store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_projection_store.hpp"
#endif

namespace sourced::cli {

int projections_command(const Options& o, Io& io) {
  std::string models = o.models.value_or(o.store);
  if (engine_of(models) == "memory") throw UsageError("--models must be a SQLite file or a postgres:// URL");
  auto events = open_for_reading(o.store);
  if (!events) events = open_memory_store();  // no event store: every projection is at head 0
  if (engine_of(models) == "postgres") {
#ifdef SOURCED_WITH_POSTGRES
    // The models' schema: the URL's schema=, else the event store's default ("sourced"), as an application
    // keeping its read models beside the events in PostgreSQL would.
    PostgresProjectionStore store(models, {.schema = "sourced"});
    list_projections(*events, store, io.out);
    return 0;
#else
    throw UsageError("this build of sourced has no PostgreSQL support");
#endif
  }
  auto file = sqlite_file_of(models);
  std::error_code ec;
  if (!file || !std::filesystem::exists(*file, ec)) return 0;  // no database: no projection recorded
  SqliteProjectionStore store(*file);
  list_projections(*events, store, io.out);
  return 0;
}

}  // namespace sourced::cli
