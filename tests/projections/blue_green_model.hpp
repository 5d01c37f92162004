#pragma once
// The blue/green test model, shared by the tests and projection_worker: per stream, the events applied
// and the version that applied them (stream → (v, n)), written to tx.table("counts") (counts_v1,
// counts_v2, ...) and read through the stable name `counts`. A half-built version shows fewer events
// than the log had when it started; the reader tests look for exactly that.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

#include "sourced/memory_projection_store.hpp"
#include "sourced/projection.hpp"
#include "sourced/sqlite_projection_store.hpp"
#ifdef SOURCED_WITH_POSTGRES
#include "sourced/postgres_projection_store.hpp"
#endif

namespace sourced::testing {

// Version `version` of the counts projection; its handler sleeps `delay_us` per event (a slow build).
template <class Tx>
Projection<Tx> counts_version(std::uint32_t version, int delay_us = 0) {
  Projection<Tx> p;
  p.name = "counts";
  p.version = version;
  auto pause = [delay_us] {
    if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
  };
  if constexpr (std::is_same_v<Tx, MemoryProjectionTransaction>) {
    p.handle = [version, pause](Tx& tx, const RecordedEvent& e) {
      pause();
      long v = 0, n = 0;
      if (auto row = tx.get(tx.table("counts"), e.stream)) std::sscanf(row->c_str(), "%ld/%ld", &v, &n);
      tx.put(tx.table("counts"), e.stream, std::to_string(version) + "/" + std::to_string(n + 1));
    };
    p.clear = [](Tx& tx) { tx.clear(tx.table("counts")); };
  } else {
    constexpr bool kDollar = !std::is_same_v<Tx, SqliteProjectionTransaction>;
    p.handle = [version, pause](Tx& tx, const RecordedEvent& e) {
      pause();
      std::string t = tx.table("counts");
      tx.execute(kDollar
                     ? "INSERT INTO " + t +
                           " (stream, v, n) VALUES ($1, $2, 1) ON CONFLICT (stream) DO UPDATE SET n = " + t + ".n + 1"
                     : "INSERT INTO " + t +
                           " (stream, v, n) VALUES (?1, ?2, 1) ON CONFLICT (stream) DO UPDATE SET n = " + t + ".n + 1",
                 {e.stream, version});
    };
    p.setup = [](Tx& tx) {
      tx.execute("CREATE TABLE IF NOT EXISTS " + tx.table("counts") +
                 " (stream TEXT PRIMARY KEY, v BIGINT NOT NULL, n BIGINT NOT NULL)");
    };
    p.clear = [](Tx& tx) { tx.execute("DELETE FROM " + tx.table("counts")); };
  }
  return p;
}

// What a reader sees through the stable name: rows stream → (version, events).
using CountsModel = std::map<std::string, std::pair<long, long>>;

inline CountsModel read_counts(MemoryProjectionStore& models) {
  CountsModel m;
  for (auto& [k, row] : models.table("counts")) {
    long v = 0, n = 0;
    std::sscanf(row.c_str(), "%ld/%ld", &v, &n);
    m[k] = {v, n};
  }
  return m;
}

template <class Store>
CountsModel read_counts(Store& models) {
  CountsModel m;
  models.query("SELECT stream, v, n FROM counts", {}, [&](const SqlRow& r) {
    m[std::string(r.text(0))] = {r.int64(1), r.int64(2)};
  });
  return m;
}

// Every event of the model, and the one version that wrote it all (0 when empty, -1 when mixed).
inline std::pair<long, long> events_and_version(const CountsModel& m) {
  long events = 0, version = 0;
  for (auto& [k, row] : m) {
    events += row.second;
    version = version == 0 || version == row.first ? row.first : -1;
  }
  return {events, version};
}

}  // namespace sourced::testing
