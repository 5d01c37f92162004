// The `sourced` binary, run as a user would: arguments, stdin, stdout, stderr and exit codes.

#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

using json = nlohmann::json;

struct Result {
  int code;
  std::string out;
  std::string err;
  std::vector<json> lines() const {
    std::vector<json> v;
    std::istringstream s(out);
    std::string line;
    while (std::getline(s, line)) v.push_back(json::parse(line));
    return v;
  }
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class Cli : public ::testing::Test {
 protected:
  Result run(const std::vector<std::string>& args, const std::string& input = "") {
    auto in = dir_.path() / "stdin", out = dir_.path() / "stdout", err = dir_.path() / "stderr";
    std::ofstream(in) << input;
    std::string cmd = quote(SOURCED_CLI) + " --store " + quote(store_);
    for (const auto& a : args) cmd += " " + quote(a);
    cmd += " <" + quote(in) + " >" + quote(out) + " 2>" + quote(err);
    int status = std::system(cmd.c_str());
    auto slurp = [](const std::filesystem::path& p) {
      std::ifstream f(p);
      return std::string(std::istreambuf_iterator<char>(f), {});
    };
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  }

  TempDir dir_;
  std::string store_ = (dir_.path() / "cli.db").string();
};

TEST_F(Cli, AppendsAndReadsBack) {
  auto r = run({"append", "account-1", "--type", "Opened", "--data", R"({"owner": "Ada"})", "--metadata",
                R"({"user":"x"})", "--expected", "no_stream"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto res = json::parse(r.out);
  EXPECT_EQ(res["first_version"], 1);
  EXPECT_EQ(res["last_position"], 1);
  EXPECT_EQ(res["ids"].size(), 1u);

  r = run({"read", "account-1"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = r.lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["stream"], "account-1");
  EXPECT_EQ(lines[0]["version"], 1);
  EXPECT_EQ(lines[0]["position"], 1);
  EXPECT_EQ(lines[0]["type"], "Opened");
  EXPECT_EQ(lines[0]["data"], json::parse(R"({"owner":"Ada"})"));
  EXPECT_EQ(lines[0]["metadata"]["user"], "x");
  EXPECT_EQ(lines[0]["id"], res["ids"][0]);
  EXPECT_TRUE(lines[0].contains("created_at"));
  EXPECT_FALSE(lines[0].contains("correlation_id"));
}

TEST_F(Cli, AppendsJsonLinesFromStdinAtomically) {
  std::string id = Uuid::v4().to_string(), corr = Uuid::v4().to_string();
  std::string input = R"({"type":"A","data":{"n":1},"id":")" + id + R"(","correlation_id":")" + corr + "\"}\n" +
                      R"({"type":"B","data":[1,2],"metadata":{"m":true}})" + "\n";
  auto r = run({"append", "s"}, input);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["last_version"], 2);
  auto lines = run({"read", "s"}).lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["id"], id);
  EXPECT_EQ(lines[0]["correlation_id"], corr);
  EXPECT_EQ(lines[1]["data"], json::parse("[1,2]"));

  // One bad line: nothing of the batch is written.
  r = run({"append", "s"}, "{\"type\":\"C\"}\n{\"type\":\"D\",\"data\":{oops}\n");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  EXPECT_EQ(run({"read", "s"}).lines().size(), 2u);

  // Repeating the first append is a no-op.
  r = run({"append", "s", "--type", "A", "--id", id, "--expected", "0"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["replayed"], true);
}

TEST_F(Cli, ReadsAllAndRangesBothWays) {
  for (const char* s : {"a-1", "a-2", "a-1", "b-1"}) ASSERT_EQ(run({"append", s, "--type", "T"}).code, 0);
  auto all = run({"read", "$all"}).lines();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[2]["stream"], "a-1");
  EXPECT_EQ(all[2]["version"], 2);
  auto back = run({"read", "$all", "--backward", "--count", "2"}).lines();
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0]["position"], 4);
  EXPECT_EQ(back[1]["position"], 3);
  auto from = run({"read", "$all", "--from", "2", "--count", "2"}).lines();
  ASSERT_EQ(from.size(), 2u);
  EXPECT_EQ(from[0]["position"], 2);
  auto stream = run({"read", "a-1", "--from", "2"}).lines();
  ASSERT_EQ(stream.size(), 1u);
  EXPECT_EQ(stream[0]["version"], 2);
}

TEST_F(Cli, ReadsAllFilteredByCategoryAndTypes) {
  ASSERT_EQ(run({"append", "account-1", "--type", "Opened"}).code, 0);
  ASSERT_EQ(run({"append", "order-1", "--type", "Opened"}).code, 0);
  ASSERT_EQ(run({"append", "account-2", "--type", "Deposited"}).code, 0);
  ASSERT_EQ(run({"append", "account-2", "--type", "Closed"}).code, 0);
  auto r = run({"read", "$all", "--category", "account", "--type", "Opened", "--type", "Closed"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = r.lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["position"], 1);
  EXPECT_EQ(lines[1]["position"], 4);
  r = run({"read", "$all", "--type", "Opened", "--backward", "--count", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(r.lines().size(), 1u);
  EXPECT_EQ(r.lines()[0]["stream"], "order-1");
  EXPECT_EQ(run({"read", "account-1", "--category", "account"}).code, 2) << "filters apply to $all only";
  EXPECT_EQ(run({"read", "$all", "--category", "account-1"}).code, 2) << "a category has no '-'";
}

TEST_F(Cli, ExitCodesDistinguishUsageConflictsNotFoundAndDeleted) {
  ASSERT_EQ(run({"append", "s", "--type", "A"}).code, 0);

  auto r = run({"append", "s", "--type", "B", "--expected", "5"});
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find("'s'"), std::string::npos);
  EXPECT_NE(r.err.find("expected version 5"), std::string::npos);
  EXPECT_NE(r.err.find("version 1"), std::string::npos);

  EXPECT_EQ(run({"read", "missing"}).code, 4);
  EXPECT_EQ(run({"info", "missing"}).code, 4);
  EXPECT_EQ(run({"append", "s", "--type", "B", "--data", "{not json"}).code, 2);
  EXPECT_EQ(run({"append", "s", "--type", "B", "--id", "nope"}).code, 2);
  EXPECT_EQ(run({"append", "s", "--type", "B", "--expected", "sometimes"}).code, 2);
  EXPECT_EQ(run({"append", "bad\nid", "--type", "B"}).code, 2);
  EXPECT_EQ(run({"append", "$system", "--type", "B"}).code, 2);
  EXPECT_EQ(run({"frobnicate"}).code, 2);
  EXPECT_EQ(run({}).code, 2);
  EXPECT_EQ(json::parse(run({"stats"}).out)["head_position"], 1) << "bad input never changed the store";

  EXPECT_EQ(run({"delete", "s", "--tombstone"}).code, 0);
  r = run({"read", "s"});
  EXPECT_EQ(r.code, 5);
  EXPECT_NE(r.err.find("'s'"), std::string::npos);
  EXPECT_EQ(run({"append", "s", "--type", "C"}).code, 5);
}

TEST_F(Cli, DeletesListsAndShowsInfo) {
  ASSERT_EQ(run({"append", "x", "--type", "A"}).code, 0);
  ASSERT_EQ(run({"append", "y", "--type", "A"}).code, 0);
  EXPECT_EQ(run({"delete", "x", "--expected", "0"}).code, 3);
  ASSERT_EQ(run({"delete", "x", "--expected", "1"}).code, 0);
  EXPECT_EQ(run({"read", "x"}).code, 4);
  auto info = json::parse(run({"info", "x"}).out);
  EXPECT_EQ(info["status"], "soft_deleted");
  EXPECT_EQ(info["last_version"], 1);
  auto streams = run({"streams"}).lines();
  ASSERT_EQ(streams.size(), 2u);
  EXPECT_EQ(streams[0]["stream"], "x");
  EXPECT_EQ(streams[1]["status"], "active");
  auto stats = json::parse(run({"stats"}).out);
  EXPECT_EQ(stats["engine"], "sqlite");
  EXPECT_EQ(stats["streams"], 2);
  EXPECT_EQ(stats["head_position"], 2);
}

TEST_F(Cli, ReadingAStoreThatDoesNotExistDoesNotCreateIt) {
  EXPECT_EQ(run({"read", "s"}).code, 4);
  EXPECT_EQ(run({"read", "$all"}).code, 0);
  EXPECT_EQ(json::parse(run({"stats"}).out)["engine"], "sqlite");
  EXPECT_FALSE(std::filesystem::exists(store_));
}

TEST_F(Cli, BadInputIsRejectedBeforeTheStoreIsCreated) {
  EXPECT_EQ(run({"delete", "bad\nid"}).code, 2);
  EXPECT_EQ(run({"append", "s", "--type", "A", "--data", "{oops"}).code, 2);
  EXPECT_EQ(run({"append", "s", "--type", "A", "--expected", "later"}).code, 2);
  EXPECT_EQ(run({"append", "bad\nid", "--type", "A"}).code, 2);
  EXPECT_EQ(run({"append", "s"}, "not json\n").code, 2);
  EXPECT_EQ(run({"delete", "s", "--expected", "x"}).code, 2);
  EXPECT_FALSE(std::filesystem::exists(store_));
}

TEST_F(Cli, FollowPrintsNewEventsAsTheyAreAppended) {
  ASSERT_EQ(run({"append", "f", "--type", "Before"}).code, 0);
  auto out = dir_.path() / "follow.out";
  auto pid_file = dir_.path() / "follow.pid";
  // --count ends the follower once it has printed three events; stderr goes elsewhere so that every
  // line of `out` is an event.
  std::string cmd = "timeout 60 " + quote(SOURCED_CLI) + " --store " + quote(store_) + " read f --follow --count 3 >" +
                    quote(out.string()) + " 2>/dev/null & echo $! >" + quote(pid_file.string());
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto complete_lines = [&] {
    std::vector<std::string> types;
    std::ifstream f(out);
    std::string line;
    while (std::getline(f, line)) {
      if (f.eof()) break;  // a line still being written
      types.push_back(json::parse(line)["type"]);
    }
    return types;
  };
  auto wait_for = [&](std::size_t n) {
    for (int i = 0; i < 300 && complete_lines().size() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return complete_lines();
  };
  // Only once the history is printed is the follower live: the next appends must reach it as new events.
  ASSERT_EQ(wait_for(1), (std::vector<std::string>{"Before"}));
  ASSERT_EQ(run({"append", "other", "--type", "Elsewhere"}).code, 0);
  ASSERT_EQ(run({"append", "f", "--type", "After1"}).code, 0);
  ASSERT_EQ(run({"append", "f", "--type", "After2"}).code, 0);
  auto types = wait_for(3);
  std::string kill = "kill $(cat " + quote(pid_file.string()) + ") 2>/dev/null";
  if (types.size() < 3) std::system(kill.c_str());
  EXPECT_EQ(types, (std::vector<std::string>{"Before", "After1", "After2"}));
  EXPECT_EQ(run({"read", "f", "--follow", "--backward"}).code, 2);
}

TEST_F(Cli, AFailedWriteOfTheOutputIsAFailure) {
  ASSERT_EQ(run({"append", "s", "--type", "A"}).code, 0);
  std::string cmd = quote(SOURCED_CLI) + " --store " + quote(store_) + " read s >/dev/full 2>/dev/null";
  int status = std::system(cmd.c_str());
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 1);
}

TEST_F(Cli, ReadsAsTextForPeople) {
  ASSERT_EQ(run({"append", "account-1", "--type", "Opened", "--data", R"({"owner":"Ada"})"}).code, 0);
  auto r = run({"read", "account-1", "--format", "text"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, 10), "#1        ");
  EXPECT_NE(r.out.find("account-1@1 Opened "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(R"({"owner":"Ada"})"), std::string::npos) << r.out;
  EXPECT_EQ(run({"read", "account-1", "--format", "yaml"}).code, 2);
}

TEST_F(Cli, PrintsEveryEventAsOneLineWhateverItsData) {
  {
    auto store = open_sqlite_store(store_);
    store->append(
        "raw", ExpectedVersion::any(),
        {event("Pretty", "{\n  \"a\": [1,\n 2]\n}"), event("Text", "plain \"text\"\nline2"), event("Empty", "", "")});
  }
  auto r = run({"read", "raw"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = r.lines();  // parses each line: fails if any event spilled over two lines
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["data"], json::parse(R"({"a":[1,2]})"));
  EXPECT_EQ(lines[1]["data"], "plain \"text\"\nline2");
  EXPECT_TRUE(lines[2]["data"].is_null());
  EXPECT_TRUE(lines[2]["metadata"].is_null());
}

TEST_F(Cli, TakesTheStoreFromTheEnvironment) {
  auto other = (dir_.path() / "env.db").string();
  std::string cmd = "SOURCED_STORE=" + quote(other) + " " + quote(SOURCED_CLI) + " append e --type A >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_TRUE(std::filesystem::exists(other));
}

}  // namespace
}  // namespace sourced::testing
