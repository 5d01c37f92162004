// PostgreSQL-specific behaviour: ordering across processes, lost connections, clear errors, the schema.
// Tests that need a server use SOURCED_TEST_PG and skip, saying so, when it is unset.

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include "engines/postgres/pg_schema.hpp"
#include "sourced/subscription_registry.hpp"
#include "store/engines.hpp"

extern char** environ;

namespace sourced::testing {
namespace {

#define REQUIRE_PG()                                  \
  auto pg_url_opt = test_pg_url();                    \
  if (!pg_url_opt) GTEST_SKIP() << pg_skip_message(); \
  const std::string& pg_url = *pg_url_opt

// A URL with one more query parameter.
std::string with_param(const std::string& url, const std::string& param) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + param;
}

// Runs a query on a fresh admin connection and returns the first column of the first row ("" if none).
std::string pg_scalar(const std::string& url, const std::string& sql) {
  PGconn* c = PQconnectdb(url.c_str());
  std::string value;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult* r = PQexec(c, sql.c_str());
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) value = PQgetvalue(r, 0, 0);
    PQclear(r);
  }
  PQfinish(c);
  return value;
}

// A schema dropped at the end of the test.
struct ScratchSchema {
  explicit ScratchSchema(std::string u) : url(std::move(u)), name(unique_pg_schema()) {}
  ~ScratchSchema() { pg_admin_exec(url, "DROP SCHEMA IF EXISTS \"" + name + "\" CASCADE"); }
  std::unique_ptr<EventStore> open(const std::string& extra_params = "") {
    return open_as(extra_params.empty() ? url : with_param(url, extra_params));
  }
  std::unique_ptr<EventStore> open_as(const std::string& other_url) {
    PostgresOptions o;
    o.schema = name;
    return open_postgres_store(other_url, o);
  }
  std::string url;
  std::string name;
};

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// --- ordering ---------------------------------------------------------------------------------------

TEST(PostgresOrdering, ManyProcessesAndThreadsAndOneReaderSeeEveryEventOnceInOrderWithoutGaps) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  auto store = schema.open();  // creates the schema before the writers race to open it
  constexpr int kProcesses = 4;
  constexpr int kThreads = 8;
  constexpr int kSeconds = 6;
  TempDir dir;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcesses; ++p) {
    auto out = (dir.path() / ("writer-" + std::to_string(p) + ".out")).string();
    auto err = (dir.path() / ("writer-" + std::to_string(p) + ".err")).string();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> args = {SOURCED_PG_WRITER, pg_url, schema.name, std::to_string(kThreads),
                                     std::to_string(kSeconds)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    ASSERT_EQ(posix_spawn(&pid, SOURCED_PG_WRITER, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    pids.push_back(pid);
  }

  // The subscriber: polls $all from the last position it saw, the whole time the writers run. A reader
  // that ever saw position p+1 before p was visible would fail the `position == next` check here.
  std::uint64_t next = 1;
  std::uint64_t polls = 0, polls_with_events = 0;
  std::map<std::string, std::uint64_t> stream_versions;
  auto poll_once = [&] {
    ++polls;
    bool any = false;
    for (const auto& e : store->read_all({.from = Position(next)})) {
      any = true;
      ASSERT_EQ(e.position.value(), next) << "a gap or a duplicate in $all as seen by a polling reader";
      ++next;
      auto& v = stream_versions[e.stream];
      ASSERT_EQ(e.version.value(), v + 1) << "stream " << e.stream << " out of order in $all";
      v = e.version.value();
    }
    if (any) ++polls_with_events;
  };
  std::vector<bool> running(pids.size(), true);
  std::size_t left = pids.size();
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(kSeconds + 120);
  while (left > 0) {
    if (std::chrono::steady_clock::now() > give_up) {
      ADD_FAILURE() << left << " writers still running 2 minutes after they should have stopped";
      break;
    }
    poll_once();
    if (HasFatalFailure()) break;
    for (std::size_t i = 0; i < pids.size(); ++i) {
      int status = 0;
      if (running[i] && waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        running[i] = false;
        --left;
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << "writer " << i << " failed: " << slurp(dir.path() / ("writer-" + std::to_string(i) + ".err"));
      }
    }
  }
  for (std::size_t i = 0; i < pids.size(); ++i) {
    if (running[i]) {
      kill(pids[i], SIGKILL);
      waitpid(pids[i], nullptr, 0);
    }
  }
  ASSERT_FALSE(HasFatalFailure());
  poll_once();  // what committed after the last poll

  // Every acknowledged append is there, exactly once, and nothing else is.
  std::vector<int> owner(next, -1);
  std::uint64_t acknowledged = 0;
  for (int p = 0; p < kProcesses; ++p) {
    std::istringstream lines(slurp(dir.path() / ("writer-" + std::to_string(p) + ".out")));
    std::uint64_t first = 0, count = 0;
    while (lines >> first >> count) {
      for (std::uint64_t pos = first; pos < first + count; ++pos) {
        ASSERT_LT(pos, next) << "acknowledged position " << pos << " was never seen by the reader";
        ASSERT_EQ(owner[pos], -1) << "position " << pos << " acknowledged twice";
        owner[pos] = p;
      }
      acknowledged += count;
    }
  }
  EXPECT_EQ(acknowledged, next - 1) << "the reader saw events nobody acknowledged";
  EXPECT_EQ(store->head_position().value(), next - 1);
  EXPECT_GT(acknowledged, 1000u) << "the writers barely wrote anything";
  EXPECT_GT(polls_with_events, 10u) << "the reader did not overlap with the writers";
  std::cout << "[ ordering ] " << acknowledged << " events from " << kProcesses << " processes x " << kThreads
            << " threads in " << kSeconds << " s (" << acknowledged / kSeconds << " events/s); " << polls << " polls, "
            << polls_with_events << " with new events\n";
}

TEST(PostgresGroupCommit, ManyAppendsToFewStreamsInOneGroupKeepVersionsAndPositionsContiguous) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  auto store = schema.open();
  constexpr int kThreads = 24;
  constexpr int kPerThread = 30;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        // New streams appear while others are appended to, several times per group.
        std::string stream = "few-" + std::to_string((t + i) % 3) + "-" + std::to_string(i / 10);
        store->append(stream, ExpectedVersion::any(), {event("E"), event("F")});
      }
    });
  }
  for (auto& th : threads) th.join();
  std::uint64_t total = 0;
  for (const auto& info : store->list_streams()) {
    auto events = store->read_stream(info.stream).to_vector();
    ASSERT_EQ(events.size(), info.last_version.value()) << info.stream;
    for (std::size_t i = 0; i < events.size(); ++i) ASSERT_EQ(events[i].version.value(), i + 1) << info.stream;
    total += events.size();
  }
  EXPECT_EQ(total, 2u * kThreads * kPerThread);
  EXPECT_EQ(store->head_position().value(), total);
  auto all = store->read_all().to_vector();
  ASSERT_EQ(all.size(), total);
  for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i].position.value(), i + 1);
}

// --- lost connections ---------------------------------------------------------------------------------

// Backends of one application_name.
std::string backends_of(const std::string& app) {
  return "FROM pg_stat_activity WHERE application_name = '" + app + "'";
}

TEST(PostgresFailures, TheStoreReconnectsAfterTheServerKillsItsConnections) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  std::string app = "sourced_kill_" + schema.name;
  auto store = schema.open("application_name=" + app);
  store->append("s", ExpectedVersion::no_stream(), {event("A")});
  ASSERT_NE(pg_scalar(pg_url, "SELECT count(*) " + backends_of(app)), "0");
  ASSERT_EQ(pg_admin_exec(pg_url, "SELECT pg_terminate_backend(pid) " + backends_of(app)), "");
  for (int i = 0; i < 200 && pg_scalar(pg_url, "SELECT count(*) " + backends_of(app)) != "0"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The pool notices dead idle connections before using them, so this normally just works; at worst one
  // call reports the lost connection.
  int failures = 0;
  try {
    store->append("s", ExpectedVersion::exact(1), {event("B")});
  } catch (const ConnectionError& e) {
    ++failures;
    EXPECT_NE(std::string(e.what()).find("connection"), std::string::npos) << e.what();
    store->append("s", ExpectedVersion::exact(1), {event("B")});
  }
  EXPECT_LE(failures, 1);
  EXPECT_EQ(store->append("s", ExpectedVersion::exact(2), {event("C")}).last_position, Position(3));
  EXPECT_EQ(store->read_stream("s").to_vector().size(), 3u);

  // Reads recover the same way.
  ASSERT_EQ(pg_admin_exec(pg_url, "SELECT pg_terminate_backend(pid) " + backends_of(app)), "");
  for (int i = 0; i < 200 && pg_scalar(pg_url, "SELECT count(*) " + backends_of(app)) != "0"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(store->read_all().to_vector().size(), 3u);
  EXPECT_EQ(store->head_position(), Position(3));
}

TEST(PostgresFailures, AnAppendWhoseConnectionDiesFailsClearlyAndWritesNothing) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  std::string app = "sourced_mid_" + schema.name;
  auto store = schema.open("application_name=" + app);
  store->append("s", ExpectedVersion::no_stream(), {event("A")});

  // Hold the head row so the next append waits inside its transaction, then kill its backend there.
  PGconn* blocker = PQconnectdb(pg_url.c_str());
  ASSERT_EQ(PQstatus(blocker), CONNECTION_OK);
  PQclear(PQexec(blocker, "BEGIN"));
  PGresult* locked = PQexec(blocker, ("SELECT position FROM \"" + schema.name + "\".head FOR UPDATE").c_str());
  ASSERT_EQ(PQresultStatus(locked), PGRES_TUPLES_OK);
  PQclear(locked);

  std::exception_ptr error;
  std::thread writer([&] {
    try {
      store->append("s", ExpectedVersion::exact(1), {event("B"), event("C")});
    } catch (...) {
      error = std::current_exception();
    }
  });
  std::string waiting = "SELECT pid " + backends_of(app) + " AND wait_event_type = 'Lock'";
  std::string pid;
  for (int i = 0; i < 500 && pid.empty(); ++i) {
    pid = pg_scalar(pg_url, waiting);
    if (pid.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(pid.empty()) << "the append never waited for the head lock";
  ASSERT_EQ(pg_admin_exec(pg_url, "SELECT pg_terminate_backend(" + pid + ")"), "");
  writer.join();
  PQclear(PQexec(blocker, "ROLLBACK"));
  PQfinish(blocker);

  ASSERT_TRUE(error) << "the append succeeded although its connection was killed";
  try {
    std::rethrow_exception(error);
  } catch (const ConnectionError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("lost the connection to PostgreSQL"), std::string::npos) << what;
    EXPECT_NE(what.find("committed whole or not at all"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "one line: " << what;
  }
  EXPECT_EQ(store->head_position(), Position(1)) << "nothing of the interrupted append was written";
  EXPECT_EQ(store->read_stream("s").to_vector().size(), 1u);
  auto r = store->append("s", ExpectedVersion::exact(1), {event("B"), event("C")});
  EXPECT_EQ(r.first_position, Position(2));
  EXPECT_EQ(r.last_position, Position(3));
}

// --- clear errors ---------------------------------------------------------------------------------------

TEST(PostgresErrors, AServerThatIsDownGivesOneClearSentence) {
  try {
    open_postgres_store("postgres://sourced@127.0.0.1:1/nothing");
    FAIL() << "expected ConnectionError";
  } catch (const ConnectionError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("cannot connect to PostgreSQL at postgres://sourced@127.0.0.1:1/nothing"), std::string::npos)
        << what;
    EXPECT_NE(what.find("refused"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
  EXPECT_THROW(open_store("postgresql://127.0.0.1:1/nothing"), ConnectionError);
}

TEST(PostgresErrors, BadUrlsGiveOneClearSentence) {
  // Malformed URLs are the caller's mistake (InvalidArgument), and their messages never show the password.
  for (std::string url : {"postgresql://u:s3cret-pw@[::1", "postgres://u:s3cret-pw@127.0.0.1:1/x?bogus=1",
                          "postgres://127.0.0.1:1/x?pool_size=0", "postgres://u:s3cret-pw@127.0.0.1:notaport/x",
                          "postgres://u:s3cret%zz@127.0.0.1:1/x", "postgres://127.0.0.1:1/x?password=s3cret-pw&a"}) {
    try {
      open_postgres_store(url);
      FAIL() << "expected InvalidArgument for " << url;
    } catch (const InvalidArgument& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("URL"), std::string::npos) << url << ": " << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      EXPECT_EQ(what.find("s3cret"), std::string::npos) << what;
    }
  }
  EXPECT_THROW(open_postgres_store("postgres://127.0.0.1:1/x?schema=Bad-Name"), InvalidArgument);
  PostgresOptions o;
  o.schema = "1abc";
  EXPECT_THROW(open_postgres_store("postgres://127.0.0.1:1/x", o), InvalidArgument);
}

TEST(PostgresErrors, AUserWhoMayNotCreateTheSchemaIsToldSo) {
  REQUIRE_PG();
  if (pg_scalar(pg_url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") != "t") {
    GTEST_SKIP() << "SOURCED_TEST_PG's user is not a superuser, so the test cannot create a limited role";
  }
  pg_admin_exec(pg_url,
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sourced_test_limited') THEN "
                "CREATE ROLE sourced_test_limited LOGIN; END IF; END $$");
  std::string limited = with_param(pg_url, "user=sourced_test_limited");
  if (pg_scalar(limited, "SELECT 1") != "1") GTEST_SKIP() << "the server does not let the limited role log in";
  ScratchSchema schema(pg_url);
  try {
    schema.open_as(limited);
    FAIL() << "expected StorageError";
  } catch (const StorageError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("may not create the sourced schema '" + schema.name + "'"), std::string::npos) << what;
    EXPECT_NE(what.find("sourced init"), std::string::npos) << what;
  }
  // Once an administrator created it, the limited user still cannot use it without grants: a clear refusal.
  schema.open()->append("s", ExpectedVersion::any(), {event("A")});
  try {
    schema.open_as(limited)->head_position();
    FAIL() << "expected StorageError";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("permission denied"), std::string::npos) << e.what();
  }
}

// --- schema -------------------------------------------------------------------------------------------

TEST(PostgresSchema, ConcurrentFirstOpensCreateItOnce) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  std::vector<std::thread> threads;
  std::atomic<int> opened{0};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      try {
        schema.open()->head_position();
        ++opened;
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(opened.load(), 6);
  EXPECT_EQ(pg_scalar(pg_url, "SELECT count(*) FROM \"" + schema.name + "\".migrations"),
            std::to_string(detail::pg::latest_schema_version()));  // one row per migration: each applied once
  EXPECT_EQ(pg_scalar(pg_url, "SELECT position FROM \"" + schema.name + "\".head"), "0");
}

// A schema as migrations 1 and 2 made it (before content types), holding one event of stream "old".
void write_version_2_schema(const std::string& url, const std::string& schema) {
  std::string sql = "CREATE SCHEMA \"" + schema + "\"; CREATE TABLE \"" + schema +
                    "\".migrations (version int PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT "
                    "NULL DEFAULT now());";
  for (const auto& m : detail::pg::migrations()) {
    if (m.version > 2) continue;
    sql += detail::pg::with_schema(m.sql, schema);
    sql += "; INSERT INTO \"" + schema + "\".migrations (version, description) VALUES (" + std::to_string(m.version) +
           ", 'old');";
  }
  ASSERT_EQ(pg_admin_exec(url, sql), "");
  ASSERT_EQ(pg_admin_exec(url, "SELECT * FROM \"" + schema +
                                   "\".append_group(ARRAY['old'], ARRAY[0], ARRAY[0::bigint], ARRAY[1], ARRAY[1], "
                                   "ARRAY[false], ARRAY[1], ARRAY[gen_random_uuid()], ARRAY[false], ARRAY['Old'], "
                                   "ARRAY['{}'::bytea], ARRAY['{}'::bytea], ARRAY[NULL::uuid], ARRAY[NULL::uuid])"),
            "");
}

TEST(PostgresSchema, AVersion2SchemaIsReadReadOnlyAsItIsAndMigratedByAWriter) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  write_version_2_schema(pg_url, schema.name);
  {
    PostgresOptions o;
    o.schema = schema.name;
    o.read_only = true;
    auto ro = open_postgres_store(pg_url, o);
    auto events = ro->read_stream("old").to_vector();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].type, "Old");
    EXPECT_EQ(events[0].content_type, ContentType::unknown);
    ASSERT_EQ(ro->read_all().to_vector().size(), 1u);
    EXPECT_EQ(ro->read_all().to_vector()[0].content_type, ContentType::unknown);
    // Before migration 4 there are no subscriptions, and a read-only store creates none.
    EXPECT_TRUE(ro->subscriptions().list().empty());
    EXPECT_FALSE(ro->subscriptions().get("s").has_value());
    EXPECT_FALSE(ro->subscriptions().holder("s").has_value());
    EXPECT_THROW(ro->subscriptions().parked("s"), SubscriptionNotFound);
    PersistentSubscriptionConfig c;
    c.name = "s";
    EXPECT_THROW(ro->subscriptions().create(c), InvalidArgument);
  }
  EXPECT_EQ(pg_scalar(pg_url, "SELECT max(version) FROM \"" + schema.name + "\".migrations"), "2")
      << "a read-only open changes nothing";
  auto store = schema.open();
  EventData e = event("New");
  e.content_type = ContentType::binary;
  store->append("old", ExpectedVersion::exact(1), {e});
  auto events = store->read_stream("old").to_vector();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].content_type, ContentType::unknown);
  EXPECT_EQ(events[1].content_type, ContentType::binary);
  PersistentSubscriptionConfig c;
  c.name = "s";
  store->subscriptions().create(c);
  EXPECT_EQ(store->subscriptions().list().size(), 1u);
  EXPECT_EQ(pg_scalar(pg_url, "SELECT max(version) FROM \"" + schema.name + "\".migrations"),
            std::to_string(detail::pg::latest_schema_version()));
}

TEST(PostgresRegistry, ALeaseIsASessionAdvisoryLockThatTheServerReleasesWithItsConnection) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  auto store = schema.open();
  PersistentSubscriptionConfig c;
  c.name = "s";
  store->subscriptions().create(c);
  auto lease = store->subscriptions().acquire("s", false, std::chrono::milliseconds(0));
  // Keyed by the schema's OID and the subscription's id, so no other schema's subscription shares it.
  std::string locks =
      "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
      "AND l.objsubid = 2 AND l.classid = (SELECT oid FROM pg_namespace WHERE nspname = '" +
      schema.name + "') AND l.objid = (SELECT id FROM \"" + schema.name + "\".subscriptions WHERE name = 's')::oid";
  EXPECT_EQ(pg_scalar(pg_url, "SELECT count(*) " + locks), "1");
  std::string me = "sourced pid " + std::to_string(::getpid()) + " on host ";
  EXPECT_TRUE(pg_scalar(pg_url, "SELECT a.application_name " + locks).starts_with(me))
      << pg_scalar(pg_url, "SELECT a.application_name " + locks);
  EXPECT_TRUE(store->subscriptions().holder("s")->starts_with(me.substr(8))) << *store->subscriptions().holder("s");
  // The connection dies (a network failure, an administrator): the server lets go, another consumer gets in.
  EXPECT_TRUE(lease->held());
  EXPECT_EQ(pg_scalar(pg_url, "SELECT pg_terminate_backend(l.pid) " + locks), "t");
  EXPECT_FALSE(lease->held()) << "the lease's session is gone, and the lock with it";
  auto start = std::chrono::steady_clock::now();
  auto next = store->subscriptions().acquire("s", true, std::chrono::seconds(5));
  EXPECT_NE(next, nullptr);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  lease.reset();  // its connection is gone: releasing it must not throw
  EXPECT_EQ(pg_scalar(pg_url, "SELECT count(*) " + locks), "1");
  next.reset();
  EXPECT_EQ(pg_scalar(pg_url, "SELECT count(*) " + locks), "0");
}

TEST(PostgresSchema, RefusesASchemaNewerThanTheLibrary) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  schema.open();
  ASSERT_EQ(pg_admin_exec(pg_url, "INSERT INTO \"" + schema.name + "\".migrations VALUES (99, 'future', now())"), "");
  try {
    schema.open();
    FAIL() << "expected StorageError";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("version 99"), std::string::npos) << e.what();
  }
}

TEST(PostgresSchema, OpenStoreTakesTheSchemaAndPoolSizeFromTheUrl) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  auto store = open_store(with_param(with_param(pg_url, "schema=" + schema.name), "pool_size=2"));
  EXPECT_EQ(store->stats().engine, "postgres");
  store->append("via-url", ExpectedVersion::no_stream(), {event("A")});
  EXPECT_EQ(pg_scalar(pg_url, "SELECT name FROM \"" + schema.name + "\".streams"), "via-url");
  // Many threads share two connections.
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        store->append("t-" + std::to_string(t), ExpectedVersion::any(), {event("E")});
        store->read_stream("t-" + std::to_string(t)).to_vector();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(store->head_position(), Position(161));
}

TEST(PostgresSchema, IsNotCreatedWhenTheOptionsSaySoAndReadOnlyNeverWrites) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  auto location = with_param(pg_url, "schema=" + schema.name);
  EXPECT_THROW(open_store(location, {.create_if_missing = false}), StoreNotFound);
  EXPECT_THROW(open_store(location, {.read_only = true}), StoreNotFound);
  EXPECT_EQ(pg_scalar(pg_url, "SELECT count(*) FROM pg_namespace WHERE nspname = '" + schema.name + "'"), "0");
  open_store(location)->append("s", ExpectedVersion::any(), {event("A")});
  auto ro = open_store("POSTGRES" + location.substr(location.find(':')), {.read_only = true});
  EXPECT_EQ(ro->head_position(), Position(1)) << "the scheme is matched without regard to case";
  EXPECT_THROW(ro->append("s", ExpectedVersion::any(), {event("B")}), InvalidArgument);
  EXPECT_THROW(ro->delete_stream("s", ExpectedVersion::any(), DeleteMode::soft), InvalidArgument);
  EXPECT_EQ(pg_scalar(pg_url, "SELECT position FROM \"" + schema.name + "\".head"), "1");
}

TEST(PostgresSchema, StoresEventsAsDocumented) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  auto store = schema.open();
  EventData e = event("Deposited", R"({"amount":5})", R"({"user":"ada"})");
  e.id = Uuid::v4();
  e.correlation_id = Uuid::v7();
  store->append("account-1", ExpectedVersion::no_stream(), {e});
  std::string q =
      "SELECT s.name || ' ' || e.version || ' ' || e.position || ' ' || e.id || ' ' || e.type || ' ' || "
      "convert_from(e.data, 'UTF8') || ' ' || e.correlation_id FROM \"" +
      schema.name + "\".events e JOIN \"" + schema.name + "\".streams s ON s.id = e.stream_id";
  EXPECT_EQ(pg_scalar(pg_url, q),
            "account-1 1 1 " + e.id->to_string() + R"( Deposited {"amount":5} )" + e.correlation_id->to_string());
}

// --- the CLI ------------------------------------------------------------------------------------------

#ifdef SOURCED_CLI
struct CliRun {
  int code;
  std::string out, err;
};

CliRun run_cli(const std::string& store, const std::string& args) {
  TempDir dir;
  auto out = dir.path() / "out", err = dir.path() / "err";
  std::string cmd = std::string(SOURCED_CLI) + " --store '" + store + "' " + args + " </dev/null >" + out.string() +
                    " 2>" + err.string();
  int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

TEST(PostgresCli, InitCreatesTheSchemaAndTheOtherCommandsWork) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  std::string url = with_param(pg_url, "schema=" + schema.name);
  auto init = run_cli(url, "init");
  ASSERT_EQ(init.code, 0) << init.err;
  EXPECT_NE(init.out.find("\"engine\":\"postgres\""), std::string::npos) << init.out;
  EXPECT_EQ(pg_scalar(pg_url, "SELECT count(*) FROM \"" + schema.name + "\".migrations"),
            std::to_string(detail::pg::latest_schema_version()));  // one row per migration: each applied once
  EXPECT_EQ(run_cli(url, "init").code, 0) << "init is idempotent";
  auto append = run_cli(url, "append account-1 --type Opened --data '{\"owner\":\"Ada\"}' --expected no_stream");
  ASSERT_EQ(append.code, 0) << append.err;
  auto read = run_cli(url, "read '$all'");
  ASSERT_EQ(read.code, 0) << read.err;
  EXPECT_NE(read.out.find("\"owner\":\"Ada\""), std::string::npos) << read.out;
  EXPECT_EQ(run_cli(url, "append account-1 --type X --expected no_stream").code, 3);
}

TEST(PostgresCli, PersistentSubscriptionsAreManagedAndConsumed) {
  REQUIRE_PG();
  ScratchSchema schema(pg_url);
  std::string url = with_param(pg_url, "schema=" + schema.name);
  ASSERT_EQ(run_cli(url, "append account-1 --type Opened").code, 0);
  ASSERT_EQ(run_cli(url, "append account-1 --type Deposited").code, 0);
  auto created = run_cli(url, "subscription create mailer --category account --max-attempts 3");
  ASSERT_EQ(created.code, 0) << created.err;
  EXPECT_NE(created.out.find("\"lag\":2"), std::string::npos) << created.out;
  EXPECT_EQ(run_cli(url, "subscription create mailer").code, 9);
  auto consumed = run_cli(url, "subscription consume mailer --count 2");
  ASSERT_EQ(consumed.code, 0) << consumed.err;
  EXPECT_EQ(std::count(consumed.out.begin(), consumed.out.end(), '\n'), 2) << consumed.out;
  auto list = run_cli(url, "subscriptions");
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("\"checkpoint\":2"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("\"holder\":null"), std::string::npos) << list.out;
  EXPECT_EQ(run_cli(url, "subscription parked mailer").out, "");
  EXPECT_EQ(run_cli(url, "subscription delete mailer").code, 0);
  EXPECT_EQ(run_cli(url, "subscription info mailer").code, 8);
}

TEST(PostgresCli, AServerThatIsDownExitsWithOneAndOneLine) {
  auto r = run_cli("postgres://127.0.0.1:1/nothing", "stats");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot connect to PostgreSQL"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  // A malformed URL is a usage error (exit 2), not a failure to retry.
  auto bad = run_cli("postgres://127.0.0.1:1/x?bogus=1", "init");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("URL"), std::string::npos) << bad.err;
}
#endif

}  // namespace
}  // namespace sourced::testing
