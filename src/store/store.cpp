#include "sourced/store.hpp"

#include <thread>

#include <fmt/format.h>

#include "sourced/memory_store.hpp"
#include "sourced/sqlite_store.hpp"
#include "store/commit_signal.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_store.hpp"
#endif

namespace sourced {

Position EventStore::wait_for_events_after(Position after, std::chrono::milliseconds timeout) {
  // Engines without a notification of their own poll, backing off to 50 ms.
  auto deadline = std::chrono::steady_clock::now() + std::min(timeout, std::chrono::milliseconds(detail::kMaxWaitMs));
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    Position head = head_position();
    if (head > after || std::chrono::steady_clock::now() >= deadline) return head;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(pause, deadline - std::chrono::steady_clock::now()));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

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
  if (location.empty())
    throw InvalidArgument("the store location is empty: give a SQLite file path or a postgres:// URL");
  return open_sqlite_store(std::string(location));
}

}  // namespace sourced
