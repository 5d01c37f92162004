// Durability and group commit of the SQLite engine, observed at the file system boundary: a VFS wrapped
// around SQLite's default one counts the syncs. This binary makes that VFS the default, so it runs on
// its own.

#include <atomic>
#include <thread>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

std::atomic<int> g_syncs{0};
sqlite3_vfs* g_real = nullptr;

struct CountingFile {
  sqlite3_file base;
  sqlite3_file* real;  // the default VFS's file, allocated right after this struct
};

sqlite3_file* real(sqlite3_file* f) { return reinterpret_cast<CountingFile*>(f)->real; }

// Every method forwards to the real file; xSync also counts.
int c_close(sqlite3_file* f) { return real(f)->pMethods->xClose(real(f)); }
int c_read(sqlite3_file* f, void* p, int n, sqlite3_int64 o) { return real(f)->pMethods->xRead(real(f), p, n, o); }
int c_write(sqlite3_file* f, const void* p, int n, sqlite3_int64 o) {
  return real(f)->pMethods->xWrite(real(f), p, n, o);
}
int c_truncate(sqlite3_file* f, sqlite3_int64 n) { return real(f)->pMethods->xTruncate(real(f), n); }
int c_sync(sqlite3_file* f, int flags) {
  ++g_syncs;
  return real(f)->pMethods->xSync(real(f), flags);
}
int c_size(sqlite3_file* f, sqlite3_int64* n) { return real(f)->pMethods->xFileSize(real(f), n); }
int c_lock(sqlite3_file* f, int l) { return real(f)->pMethods->xLock(real(f), l); }
int c_unlock(sqlite3_file* f, int l) { return real(f)->pMethods->xUnlock(real(f), l); }
int c_reserved(sqlite3_file* f, int* r) { return real(f)->pMethods->xCheckReservedLock(real(f), r); }
int c_control(sqlite3_file* f, int op, void* a) { return real(f)->pMethods->xFileControl(real(f), op, a); }
int c_sector(sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); }
int c_device(sqlite3_file* f) { return real(f)->pMethods->xDeviceCharacteristics(real(f)); }
int c_shm_map(sqlite3_file* f, int i, int n, int w, void volatile** p) {
  return real(f)->pMethods->xShmMap(real(f), i, n, w, p);
}
int c_shm_lock(sqlite3_file* f, int o, int n, int fl) { return real(f)->pMethods->xShmLock(real(f), o, n, fl); }
void c_shm_barrier(sqlite3_file* f) { real(f)->pMethods->xShmBarrier(real(f)); }
int c_shm_unmap(sqlite3_file* f, int d) { return real(f)->pMethods->xShmUnmap(real(f), d); }
int c_fetch(sqlite3_file* f, sqlite3_int64 o, int n, void** p) { return real(f)->pMethods->xFetch(real(f), o, n, p); }
int c_unfetch(sqlite3_file* f, sqlite3_int64 o, void* p) { return real(f)->pMethods->xUnfetch(real(f), o, p); }

const sqlite3_io_methods kMethods = {3,          c_close,       c_read,      c_write,   c_truncate, c_sync,   c_size,
                                     c_lock,     c_unlock,      c_reserved,  c_control, c_sector,   c_device, c_shm_map,
                                     c_shm_lock, c_shm_barrier, c_shm_unmap, c_fetch,   c_unfetch};

int c_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out) {
  auto* cf = reinterpret_cast<CountingFile*>(f);
  cf->real = reinterpret_cast<sqlite3_file*>(cf + 1);
  int rc = g_real->xOpen(g_real, name, cf->real, flags, out);
  cf->base.pMethods = cf->real->pMethods ? &kMethods : nullptr;
  return rc;
}

sqlite3_vfs g_counting;

void install_counting_vfs() {
  g_real = sqlite3_vfs_find(nullptr);
  g_counting = *g_real;
  g_counting.zName = "counting";
  g_counting.szOsFile = static_cast<int>(sizeof(CountingFile)) + g_real->szOsFile;
  g_counting.xOpen = c_open;
  g_counting.pNext = nullptr;
  ASSERT_EQ(sqlite3_vfs_register(&g_counting, 1), SQLITE_OK);
}

class SqliteSync : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { install_counting_vfs(); }
};

TEST_F(SqliteSync, EveryAcknowledgedAppendWasSynced) {
  TempDir dir;
  auto store = open_sqlite_store((dir.path() / "sync.db").string());
  store->append("warm-up", ExpectedVersion::any(), {event("A")});
  int before = g_syncs.load();
  for (int i = 0; i < 20; ++i) {
    int prior = g_syncs.load();
    store->append("s", ExpectedVersion::any(), {event("A")});
    EXPECT_GT(g_syncs.load(), prior) << "append " << i << " returned before anything was synced";
  }
  EXPECT_GE(g_syncs.load() - before, 20);
}

TEST_F(SqliteSync, ConcurrentAppendsShareOneSync) {
  TempDir dir;
  auto path = (dir.path() / "group.db").string();
  auto store = open_sqlite_store(path);
  store->append("warm-up", ExpectedVersion::any(), {event("A")});
  // Hold the write lock so that the appends below queue up behind the writer.
  sqlite3* blocker = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &blocker), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(blocker, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  constexpr int kAppends = 50;
  int before = g_syncs.load();
  std::vector<std::thread> threads;
  for (int t = 0; t < kAppends; ++t) {
    threads.emplace_back([&, t] { store->append("w-" + std::to_string(t), ExpectedVersion::any(), {event("A")}); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(sqlite3_exec(blocker, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  for (auto& th : threads) th.join();
  sqlite3_close(blocker);
  int syncs = g_syncs.load() - before;
  EXPECT_LE(syncs, 6) << kAppends << " concurrent appends should share a few commits, not pay one sync each";
  EXPECT_EQ(store->head_position(), Position(kAppends + 1));
}

TEST_F(SqliteSync, TheNonDurableSettingSkipsTheSyncPerCommit) {
  TempDir dir;
  SqliteOptions options;
  options.durable = false;
  auto store = open_sqlite_store((dir.path() / "fast.db").string(), options);
  store->append("warm-up", ExpectedVersion::any(), {event("A")});
  int before = g_syncs.load();
  for (int i = 0; i < 20; ++i) store->append("s", ExpectedVersion::any(), {event("A")});
  EXPECT_LT(g_syncs.load() - before, 5);
}

}  // namespace
}  // namespace sourced::testing
