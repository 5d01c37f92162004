// Opening a store: create_if_missing, read_only, and files that are not sourced stores. Whatever is refused
// is left exactly as it was.

#include <algorithm>
#include <fstream>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void sql(const std::string& path, const char* statements) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, statements, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
}

std::vector<std::string> names_in(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(OpenStore, AMissingFileIsNotCreatedWhenTheOptionsSaySo) {
  TempDir dir;
  auto path = (dir.path() / "events.db").string();
  EXPECT_THROW(open_store(path, {.create_if_missing = false}), StoreNotFound);
  EXPECT_THROW(open_store(path, {.read_only = true}), StoreNotFound);
  EXPECT_FALSE(std::filesystem::exists(path));
  try {
    open_store("sqlite:" + path, {.create_if_missing = false});
    FAIL();
  } catch (const StoreNotFound& e) {
    EXPECT_EQ(e.code(), ErrorCode::store_not_found);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_TRUE(names_in(dir.path()).empty());
}

TEST(OpenStore, ReadOnlyReadsAndRefusesWritesAndChangesNothing) {
  TempDir dir;
  auto path = (dir.path() / "events.db").string();
  open_store(path)->append("account-1", ExpectedVersion::no_stream(), {event("Opened")});
  auto before = file_bytes(path);
  auto store = open_store(path, {.read_only = true});
  EXPECT_EQ(store->read_stream("account-1").to_vector().size(), 1u);
  EXPECT_EQ(store->head_position(), Position(1));
  EXPECT_THROW(store->append("account-1", ExpectedVersion::any(), {event("Deposited")}), InvalidArgument);
  EXPECT_THROW(store->delete_stream("account-1", ExpectedVersion::any(), DeleteMode::soft), InvalidArgument);
  store.reset();
  EXPECT_EQ(file_bytes(path), before);
}

TEST(OpenStore, ReadOnlySeesWhatAWriterAppendsLater) {
  TempDir dir;
  auto path = (dir.path() / "events.db").string();
  auto writer = open_store(path);
  writer->append("s", ExpectedVersion::any(), {event("A")});
  auto reader = open_store(path, {.read_only = true});
  writer->append("s", ExpectedVersion::any(), {event("B")});
  EXPECT_EQ(reader->read_all().to_vector().size(), 2u);
  EXPECT_EQ(reader->wait_for_events_after(Position(1), std::chrono::milliseconds(1000)), Position(2));
}

TEST(OpenStore, AnotherProgramsDatabaseIsRefusedAndLeftUnchanged) {
  TempDir dir;
  auto path = (dir.path() / "other.db").string();
  sql(path, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ada');");
  auto before = file_bytes(path);
  for (bool read_only : {true, false}) {
    try {
      open_store(path, {.read_only = read_only});
      FAIL() << "opened another program's database, read_only=" << read_only;
    } catch (const StorageError& e) {
      EXPECT_NE(std::string(e.what()).find("is not a sourced event store"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(file_bytes(path), before);
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"other.db"});
}

TEST(OpenStore, AnEmptyFileBecomesAStoreOnlyWhenWritable) {
  TempDir dir;
  auto path = (dir.path() / "empty.db").string();
  { std::ofstream touch(path); }
  EXPECT_THROW(open_store(path, {.read_only = true}), StorageError);
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
  open_store(path)->append("s", ExpectedVersion::any(), {event("A")});
  EXPECT_EQ(open_store(path, {.read_only = true})->head_position(), Position(1));
}

TEST(OpenStore, SomethingThatIsNotARegularFileIsRefusedAndNothingIsCreated) {
  // Files another run may have left are not this test's concern: only that opening adds none.
  bool journal = std::filesystem::exists("/dev/null-journal"), wal = std::filesystem::exists("/dev/null-wal");
  for (bool read_only : {true, false}) {
    EXPECT_THROW(open_store("/dev/null", {.read_only = read_only}), StorageError);
  }
  EXPECT_EQ(std::filesystem::exists("/dev/null-journal"), journal);
  EXPECT_EQ(std::filesystem::exists("/dev/null-wal"), wal);
  TempDir dir;
  EXPECT_THROW(open_store(dir.path().string()), StorageError);
}

TEST(OpenStore, AStoreWrittenBeforeApplicationIdsIsStillRecognised) {
  TempDir dir;
  auto path = (dir.path() / "old.db").string();
  open_store(path)->append("s", ExpectedVersion::any(), {event("A")});
  sql(path, "PRAGMA application_id = 0");
  EXPECT_EQ(open_store(path, {.read_only = true})->head_position(), Position(1));
  EXPECT_EQ(open_store(path)->head_position(), Position(1));
}

}  // namespace
}  // namespace sourced::testing
