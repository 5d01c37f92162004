// The projection commands: mounted in an application's CLI11 command line (projection_cli.hpp), run
// in-process against a SQLite event store and read-model file; and the standalone `sourced projections`
// (the binary) listing what a read-model database records, with its lag, on SQLite and PostgreSQL.

#include "sourced/projection_cli.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include "projections/harness.hpp"
#include "sourced/open_store.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> v;
  std::istringstream s(text);
  std::string line;
  while (std::getline(s, line)) v.push_back(json::parse(line));
  return v;
}

// An application with one partitioned projection ("counts", 3 partitions) whose handler fails on the
// positions in `poisoned`, and the projection commands mounted in its command line.
class MountedCommands : public ::testing::Test {
 protected:
  Projection<SqliteProjectionTransaction> counts() {
    return h_.projection("counts", [this](const RecordedEvent& e) {
      if (poisoned_.count(e.position.value())) throw std::runtime_error("poisoned event");
    });
  }

  int run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    CLI::App app{"app"};
    std::function<int()> action;
    ProjectionCli cli;
    cli.with_stores = [this](const std::function<int(EventStore&, ProjectionStore&)>& f) {
      return f(h_.events(), h_.models());
    };
    cli.projections.push_back(projection_command_entry<SqliteProjectionStore>(counts(), 3));
    cli.out = &out_;
    cli.err = &err_;
    auto subs = add_projection_commands(app, cli, action);
    EXPECT_EQ(subs.size(), 4u);
    args.insert(args.begin(), "app");
    std::vector<const char*> argv;
    for (auto& a : args) argv.push_back(a.c_str());
    app.parse(static_cast<int>(argv.size()), argv.data());
    return action ? action() : -1;
  }

  Position append(const std::string& stream, int n = 1) {
    std::vector<EventData> batch(static_cast<std::size_t>(n), event("Happened"));
    return h_.events().append(stream, ExpectedVersion::any(), batch).last_position;
  }

  SqliteModels h_;
  std::set<std::uint64_t> poisoned_;
  std::ostringstream out_, err_;
};

TEST_F(MountedCommands, ListSkipRetryAndRebuildAProjectionOfTheApplication) {
  for (int i = 0; i < 30; ++i) append("s-" + std::to_string(i % 7));
  auto bad = append("bad");
  auto head = append("s-1", 5);
  poisoned_.insert(bad.value());
  auto p = partition_for("bad", 3);
  {
    PartitionedRunnerOptions o{.partitions = 3, .max_attempts = 1, .stop_when_caught_up = true};
    o.progress = ProgressDisplay::none;
    o.log = [](std::string_view) {};
    PartitionedProjectionRunner runner(h_.events(), h_.models(), counts(), o);
    ASSERT_TRUE(runner.wait_until_stopped(30s));
  }

  ASSERT_EQ(run({"projections"}), 0) << err_.str();
  auto rows = json_lines(out_.str());
  ASSERT_EQ(rows.size(), 3u) << out_.str();
  for (auto& r : rows) {
    EXPECT_EQ(r["name"], "counts");
    EXPECT_EQ(r["version"], 1);
    EXPECT_EQ(r["head"], head.value());
    EXPECT_EQ(r["lag"], head.value() - r["checkpoint"].get<std::uint64_t>());
    bool failed = r["partition"] == std::to_string(p);
    EXPECT_EQ(r["status"], failed ? "failed" : "stopped") << r.dump();
    EXPECT_EQ(r["errors"], failed ? 1 : 0) << r.dump();
    if (failed) EXPECT_NE(r["last_error"].get<std::string>().find("poisoned event"), std::string::npos);
  }

  EXPECT_EQ(run({"projection", "retry", "counts", std::to_string((p + 1) % 3)}), 2) << "that partition has not failed";
  EXPECT_NE(err_.str().find("has not failed"), std::string::npos) << err_.str();
  EXPECT_EQ(run({"projection", "skip", "counts", "7"}), 2);
  EXPECT_NE(err_.str().find("partitions 0 to 2"), std::string::npos) << err_.str();
  EXPECT_EQ(run({"projection", "skip", "nope", "0"}), 2);
  EXPECT_NE(err_.str().find("counts"), std::string::npos) << "names what the application has: " << err_.str();

  ASSERT_EQ(run({"projection", "skip", "counts", std::to_string(p)}), 0) << err_.str();
  EXPECT_NE(out_.str().find("skipped position " + std::to_string(bad.value())), std::string::npos) << out_.str();
  EXPECT_EQ(h_.models().load_state({"counts", 1, std::to_string(p)})->checkpoint, bad);
  EXPECT_EQ(h_.models().list_errors("counts").at(0).resolution, "skipped");

  // A rebuild replays everything (the event is no longer poisoned): the clean pass.
  poisoned_.clear();
  ASSERT_EQ(run({"projection", "rebuild", "counts"}), 0) << err_.str();
  EXPECT_NE(out_.str().find("rebuilt projection counts v1 through position " + std::to_string(head.value())),
            std::string::npos)
      << out_.str();
  EXPECT_EQ(h_.model("counts"), fold(h_.events()));
  EXPECT_EQ(run({"projection", "rebuild", "other"}), 2);
}

TEST_F(MountedCommands, ARetriedPartitionIsFinishedByTheNextRun) {
  auto bad = append("bad", 2);
  auto head = append("x", 3);
  poisoned_.insert(bad.value());
  auto p = partition_for("bad", 3);
  PartitionedRunnerOptions o{.partitions = 3, .max_attempts = 1, .stop_when_caught_up = true};
  o.progress = ProgressDisplay::none;
  o.log = [](std::string_view) {};
  {
    PartitionedProjectionRunner runner(h_.events(), h_.models(), counts(), o);
    ASSERT_TRUE(runner.wait_until_stopped(30s));
  }
  poisoned_.clear();
  ASSERT_EQ(run({"projection", "retry", "counts", std::to_string(p)}), 0) << err_.str();
  EXPECT_EQ(h_.models().load_state({"counts", 1, std::to_string(p)})->status, ProjectionStatus::catching_up);
  PartitionedProjectionRunner runner(h_.events(), h_.models(), counts(), o);
  ASSERT_TRUE(runner.wait_until_stopped(30s));
  EXPECT_EQ(h_.model("counts"), fold(h_.events()));
  EXPECT_EQ(runner.wait_for(head, 1s), WaitResult::reached);
}

// ---- the standalone tool ----

struct Ran {
  int code;
  std::string out, err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Ran sourced_cli(const std::vector<std::string>& args, const std::filesystem::path& dir) {
  std::string cmd = quote(SOURCED_CLI);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " >" + quote((dir / "out").string()) + " 2>" + quote((dir / "err").string());
  int status = std::system(("sh -c " + quote(cmd)).c_str());
  auto slurp = [](const std::filesystem::path& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir / "out"), slurp(dir / "err")};
}

TEST(SourcedProjections, ListsTheProjectionsOfAReadModelFileWithTheirLag) {
  TempDir dir;
  auto events_path = (dir.path() / "events.db").string();
  auto models_path = (dir.path() / "models.db").string();
  auto events = open_store(events_path);
  std::vector<EventData> batch(4, event("E"));
  events->append("a", ExpectedVersion::any(), batch);
  Position first = events->append("b", ExpectedVersion::any(), batch).last_position;
  {
    SqliteProjectionStore models(models_path);
    SqliteModels shape;  // only for its projection definition
    ProjectionRunnerOptions o{.stop_when_caught_up = true};
    o.progress = ProgressDisplay::none;
    ProjectionRunner runner(*events, models, shape.projection("counts"), o);
    ASSERT_TRUE(runner.wait_until_stopped(30s));
  }
  Position head = events->append("c", ExpectedVersion::any(), batch).last_position;
  auto r = sourced_cli({"projections", "--store", events_path, "--models", models_path}, dir.path());
  ASSERT_EQ(r.code, 0) << r.err;
  auto rows = json_lines(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  EXPECT_EQ(rows[0]["name"], "counts");
  EXPECT_EQ(rows[0]["partition"], "");
  EXPECT_EQ(rows[0]["checkpoint"], first.value());
  EXPECT_EQ(rows[0]["head"], head.value());
  EXPECT_EQ(rows[0]["lag"], head.value() - first.value());
  EXPECT_EQ(rows[0]["status"], "stopped");
  EXPECT_EQ(rows[0]["errors"], 0);

  // Without --models: the events' own file, which records no projection.
  r = sourced_cli({"projections", "--store", events_path}, dir.path());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  // A read-model file that does not exist is not created.
  auto missing = (dir.path() / "none.db").string();
  r = sourced_cli({"projections", "--store", events_path, "--models", missing}, dir.path());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(std::filesystem::exists(missing));
  r = sourced_cli({"projections", "--store", events_path, "--models", "memory:"}, dir.path());
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--models"), std::string::npos) << r.err;
}

#ifdef SOURCED_WITH_POSTGRES
TEST(SourcedProjections, ListsTheProjectionsBesideTheEventsInPostgres) {
  PostgresModels h;
  if (auto why = h.skip_reason()) GTEST_SKIP() << *why;
  TempDir dir;
  std::vector<EventData> batch(3, event("E"));
  auto first = h.events().append("a", ExpectedVersion::any(), batch).last_position;
  {
    ProjectionRunnerOptions o{.stop_when_caught_up = true};
    o.progress = ProgressDisplay::none;
    ProjectionRunner runner(h.events(), h.models(), h.projection("counts"), o);
    ASSERT_TRUE(runner.wait_until_stopped(30s));
  }
  auto head = h.events().append("b", ExpectedVersion::any(), batch).last_position;
  auto r = sourced_cli({"projections", "--store", h.events_location(), "--models", h.models_location()}, dir.path());
  ASSERT_EQ(r.code, 0) << r.err;
  auto rows = json_lines(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  EXPECT_EQ(rows[0]["checkpoint"], first.value());
  EXPECT_EQ(rows[0]["lag"], head.value() - first.value());
}
#endif

}  // namespace
}  // namespace sourced::testing
