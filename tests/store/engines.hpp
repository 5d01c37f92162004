#pragma once
// The engines the conformance suite runs against. Each test gets a fresh, empty store; reopen() opens
// the same store again (for durability checks; the memory engine cannot, and says so).

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "sourced/memory_store.hpp"
#include "sourced/open_store.hpp"
#include "sourced/sqlite_store.hpp"
#include "sourced/store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include <random>

#include <libpq-fe.h>

#include "sourced/postgres_store.hpp"
#endif

namespace sourced::testing {

// A temporary directory removed at the end of its scope.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("sourced-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class EngineHarness {
 public:
  virtual ~EngineHarness() = default;
  virtual std::unique_ptr<EventStore> open() = 0;
  virtual bool durable() const { return true; }
  // Why this engine cannot run here (e.g. no server configured); tests skip with this message.
  virtual std::optional<std::string> skip_reason() const { return std::nullopt; }
  // Where another process opens the same store with open_store(); nullopt when it cannot.
  virtual std::optional<std::string> location() const { return std::nullopt; }
};

class MemoryHarness final : public EngineHarness {
 public:
  std::unique_ptr<EventStore> open() override { return open_memory_store(); }
  bool durable() const override { return false; }
};

class SqliteHarness final : public EngineHarness {
 public:
  std::unique_ptr<EventStore> open() override { return open_sqlite_store((dir_.path() / "store.db").string()); }
  std::optional<std::string> location() const override { return (dir_.path() / "store.db").string(); }

 private:
  TempDir dir_;
};

#ifdef SOURCED_WITH_POSTGRES
// The PostgreSQL server the tests use: the URL in SOURCED_TEST_PG (scripts/with-postgres.sh starts a
// throwaway one and sets it), or nullopt when it is unset.
inline std::optional<std::string> test_pg_url() {
  const char* url = std::getenv("SOURCED_TEST_PG");
  if (!url || !*url) return std::nullopt;
  return std::string(url);
}

inline std::string pg_skip_message() {
  return "SOURCED_TEST_PG is unset: PostgreSQL tests skipped (run them with `bash scripts/with-postgres.sh ctest`)";
}

// A schema name no other test (in this or another process) uses.
inline std::string unique_pg_schema() {
  static std::atomic<int> counter{0};
  static const std::uint64_t salt = std::random_device{}();
  return "test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + std::to_string(salt % 100000);
}

// Runs one SQL command on the test server with a fresh connection; returns libpq's error, empty on success.
inline std::string pg_admin_exec(const std::string& url, const std::string& sql) {
  PGconn* c = PQconnectdb(url.c_str());
  std::string error;
  if (PQstatus(c) != CONNECTION_OK) {
    error = PQerrorMessage(c);
  } else {
    PQsetNoticeProcessor(
        c, [](void*, const char*) {}, nullptr);  // "drop cascades to ..." is expected
    PGresult* r = PQexec(c, sql.c_str());
    auto st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) error = PQerrorMessage(c);
    PQclear(r);
  }
  PQfinish(c);
  return error;
}

// Each harness owns a fresh schema on the test server, dropped at the end; reopen() opens it again.
class PostgresHarness final : public EngineHarness {
 public:
  PostgresHarness() : url_(test_pg_url()), schema_(unique_pg_schema()) {}
  ~PostgresHarness() override {
    if (url_) pg_admin_exec(*url_, "DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE");
  }
  std::unique_ptr<EventStore> open() override {
    if (!url_) throw std::logic_error(pg_skip_message());
    PostgresOptions o;
    o.schema = schema_;
    return open_postgres_store(*url_, o);
  }
  std::optional<std::string> skip_reason() const override {
    if (!url_) return pg_skip_message();
    return std::nullopt;
  }
  const std::string& schema() const { return schema_; }
  std::optional<std::string> location() const override {
    if (!url_) return std::nullopt;
    return *url_ + (url_->find('?') == std::string::npos ? "?" : "&") + "schema=" + schema_;
  }

 private:
  std::optional<std::string> url_;
  std::string schema_;
};
#endif

struct EngineParam {
  std::string name;
  std::function<std::unique_ptr<EngineHarness>()> make;
  friend void PrintTo(const EngineParam& p, std::ostream* os) { *os << p.name; }
};

inline std::vector<EngineParam> all_engines() {
  std::vector<EngineParam> engines = {
      {"memory", [] { return std::make_unique<MemoryHarness>(); }},
      {"sqlite", [] { return std::make_unique<SqliteHarness>(); }},
#ifdef SOURCED_WITH_POSTGRES
      {"postgres", [] { return std::make_unique<PostgresHarness>(); }},
#endif
  };
  return engines;
}

inline EventData event(std::string type, std::string data = "{}", std::string metadata = "{}") {
  EventData e;
  e.type = std::move(type);
  e.data = std::move(data);
  e.metadata = std::move(metadata);
  return e;
}

inline EventData event_with_id(std::string type, Uuid id) {
  EventData e = event(std::move(type));
  e.id = id;
  return e;
}

}  // namespace sourced::testing
