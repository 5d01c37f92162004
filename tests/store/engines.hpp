#pragma once
// The engines the conformance suite runs against. Each test gets a fresh, empty store; reopen() opens
// the same store again (for durability checks; the memory engine cannot, and says so).

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "sourced/memory_store.hpp"
#include "sourced/sqlite_store.hpp"
#include "sourced/store.hpp"

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
};

class MemoryHarness final : public EngineHarness {
 public:
  std::unique_ptr<EventStore> open() override { return open_memory_store(); }
  bool durable() const override { return false; }
};

class SqliteHarness final : public EngineHarness {
 public:
  std::unique_ptr<EventStore> open() override { return open_sqlite_store((dir_.path() / "store.db").string()); }

 private:
  TempDir dir_;
};

struct EngineParam {
  std::string name;
  std::function<std::unique_ptr<EngineHarness>()> make;
  friend void PrintTo(const EngineParam& p, std::ostream* os) { *os << p.name; }
};

inline std::vector<EngineParam> all_engines() {
  std::vector<EngineParam> engines = {
      {"memory", [] { return std::make_unique<MemoryHarness>(); }},
      {"sqlite", [] { return std::make_unique<SqliteHarness>(); }},
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
