// The `sourced` binary, run as a user would: arguments, stdin, stdout, stderr and exit codes.

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>
#include <sys/wait.h>

#include "sourced/event_handler.hpp"
#include "sourced/sqlite_store.hpp"
#include "store/engines.hpp"
#include "store/sqlite_v1.hpp"

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

// SOURCED_CLI_UNDER_TEST runs the tests against another build of the tool (an older one, to see a test fail).
std::string cli_binary() {
  const char* other = std::getenv("SOURCED_CLI_UNDER_TEST");
  return other ? other : SOURCED_CLI;
}

std::string base64_decode(const std::string& text) {
  static const std::string kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::uint32_t bits = 0;
  int n = 0;
  for (char c : text) {
    if (c == '=') break;
    bits = bits << 6 | static_cast<std::uint32_t>(kAlphabet.find(c));
    if ((n += 6) >= 8) out += static_cast<char>(bits >> (n -= 8) & 0xFF);
  }
  return out;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

class Cli : public ::testing::Test {
 protected:
  Result run(const std::vector<std::string>& args, const std::string& input = "") {
    auto in = dir_.path() / "stdin", out = dir_.path() / "stdout", err = dir_.path() / "stderr";
    std::ofstream(in) << input;
    std::string cmd = prefix_ + quote(cli_binary()) + " --store " + quote(store_);
    for (const auto& a : args) cmd += " " + quote(a);
    cmd += " <" + quote(in) + " >" + quote(out) + " 2>" + quote(err);
    int status = std::system(("sh -c " + quote(cmd)).c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  }

  // The first event line of `read` for a stream, as printed.
  std::string first_line_of(const std::string& stream) {
    auto out = run({"read", stream}).out;
    return out.substr(0, out.find('\n'));
  }

  std::string prefix_;  // shell commands run before the tool (ulimit)

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

// Loading libpq and its ~20 libraries cost more than the rest of a short SQLite command: the tool opens it
// only for a PostgreSQL store (tools/sourced/lazy_libpq.cpp; the PostgresCli tests run it against a server).
TEST_F(Cli, ASqliteCommandDoesNotLoadLibpq) {
  prefix_ = "LD_DEBUG=files ";
  auto r = run({"append", "s-1", "--type", "T"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("libc.so"), std::string::npos) << "LD_DEBUG=files printed nothing?\n" << r.err;
  EXPECT_EQ(r.err.find("libpq"), std::string::npos)
      << "the tool loads libpq: the PostgreSQL engine calls a libpq function missing from "
         "tools/sourced/lazy_libpq.cpp (`readelf -d` on the binary lists libpq); add it there";
}

#ifdef SOURCED_STATIC_CLI
// Built with SOURCED_STATIC_CLI (the default), the tool carries the C++ runtime, SQLite and fmt, so a
// one-shot command does not pay the dynamic loader for them (tools/sourced/CMakeLists.txt).
TEST_F(Cli, ASqliteCommandLoadsOnlyTheCLibraries) {
  prefix_ = "LD_DEBUG=files ";
  auto r = run({"append", "s-1", "--type", "T"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_NE(r.err.find("libc.so"), std::string::npos) << "LD_DEBUG=files printed nothing?\n" << r.err;
  for (const char* lib : {"libsqlite3", "libstdc++", "libfmt", "libgcc_s"}) {
    EXPECT_EQ(r.err.find(lib), std::string::npos)
        << "the tool loads " << lib << " (`readelf -d` on the binary lists it): for fmt, a symbol is "
        << "missing from tools/sourced/fmt_runtime.cpp\n"
        << r.err;
  }
}
#endif

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

// stdin is read in chunks (1 MiB; SOURCED_STDIN_CHUNK bytes here): lines cut by a chunk boundary, a line
// longer than a chunk, blank and CRLF lines, and a last line without a newline all append as written.
TEST_F(Cli, StdinLinesAcrossChunkBoundaries) {
  std::string input;
  for (int i = 1; i <= 40; ++i) {
    input += R"({"type":"T)" + std::to_string(i) + R"(","data":{"i":)" + std::to_string(i) + R"(,"s":")" +
             std::string(i * 3, 'a' + i % 26) + R"("}})";
    input += i % 7 == 0 ? "\r\n\n" : "\n";
  }
  input += R"({"type":"Last","data":[1,2,3]})";  // no newline at the end
  for (const char* chunk : {"1", "7", "64", ""}) {
    store_ = (dir_.path() / (std::string("chunk") + chunk + ".db")).string();
    prefix_ = std::string(*chunk ? "SOURCED_STDIN_CHUNK=" : "") + chunk + " ";
    auto r = run({"append", "s"}, input);
    ASSERT_EQ(r.code, 0) << "chunk " << chunk << ": " << r.err;
    prefix_.clear();
    auto lines = run({"read", "s"}).lines();
    ASSERT_EQ(lines.size(), 41u) << "chunk " << chunk;
    for (int i = 1; i <= 40; ++i) {
      EXPECT_EQ(lines[i - 1]["type"], "T" + std::to_string(i)) << "chunk " << chunk;
      EXPECT_EQ(lines[i - 1]["data"]["s"], std::string(i * 3, 'a' + i % 26)) << "chunk " << chunk;
    }
    EXPECT_EQ(lines[40]["type"], "Last");
    EXPECT_EQ(lines[40]["data"], json::parse("[1,2,3]"));
  }
}

TEST_F(Cli, StdinLineLongerThanTheChunk) {
  std::string big(3 << 20, 'x');  // 3 MiB: longer than the 1 MiB chunk
  big[12345] = 'y';
  std::string input = R"({"type":"Small"})"
                      "\n"
                      R"({"type":"Big","data":{"blob":")" +
                      big +
                      R"("}})"
                      "\n" +
                      R"({"type":"After"})"
                      "\n";
  auto r = run({"append", "s"}, input);
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = run({"read", "s"}).lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1]["data"]["blob"], big);
  EXPECT_EQ(lines[2]["type"], "After");
}

// A bad line is reported by its number, whatever chunk it falls in, and nothing of the input is stored.
TEST_F(Cli, StdinInvalidLineIsReportedByNumberAndNothingIsAppended) {
  std::string input;
  for (int i = 1; i <= 30; ++i) input += R"({"type":"T","data":{"i":)" + std::to_string(i) + "}}\n";
  input += R"({"type":"T","data":{"i":31})"
           "\n";               // line 31: the object is not closed
  input += R"({"type":"T"})";  // line 32, no newline
  for (const char* chunk : {"5", "100", ""}) {
    prefix_ = std::string(*chunk ? "SOURCED_STDIN_CHUNK=" : "") + chunk + " ";
    auto r = run({"append", "s"}, input);
    EXPECT_EQ(r.code, 2) << "chunk " << chunk;
    EXPECT_NE(r.err.find("stdin line 31 "), std::string::npos) << "chunk " << chunk << ": " << r.err;
    prefix_.clear();
    EXPECT_EQ(run({"read", "s"}).code, 4) << "chunk " << chunk << ": nothing may be appended";
  }
  // The last line without its newline is checked too.
  prefix_ = "SOURCED_STDIN_CHUNK=3 ";
  auto r = run({"append", "s"}, R"({"type":"A"})"
                                "\n"
                                R"({"type":)");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("stdin line 2 "), std::string::npos) << r.err;
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
  std::string cmd = "timeout 60 " + quote(cli_binary()) + " --store " + quote(store_) + " read f --follow --count 3 >" +
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
  std::string cmd = quote(cli_binary()) + " --store " + quote(store_) + " read s >/dev/full 2>/dev/null";
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
  // Bytes that are not JSON print in the lossless form; no bytes print as no field.
  EXPECT_FALSE(lines[1].contains("data"));
  EXPECT_EQ(base64_decode(lines[1]["data_base64"]), "plain \"text\"\nline2");
  EXPECT_FALSE(lines[2].contains("data"));
  EXPECT_FALSE(lines[2].contains("metadata"));
}

TEST_F(Cli, TakesTheStoreFromTheEnvironment) {
  auto other = (dir_.path() / "env.db").string();
  std::string cmd = "SOURCED_STORE=" + quote(other) + " " + quote(cli_binary()) + " append e --type A >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_TRUE(std::filesystem::exists(other));
}

// --- bad input, found by trying the tool as a user would (issue 10, point 11) --------------------------

TEST_F(Cli, JsonFromTheUserIsStoredAsTheBytesGiven) {
  std::string data = R"({"big":123456789012345678901234567890, "n":-9223372036854775809,"z":1,"a":1,"a":2.50})";
  auto r = run({"append", "n", "--type", "X", "--data", data, "--metadata", R"({"k" : 1e5})"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::string line = first_line_of("n");
  EXPECT_NE(line.find(",\"data\":" + data + ","), std::string::npos) << line;
  EXPECT_NE(line.find(R"("metadata":{"k" : 1e5})"), std::string::npos) << line;

  // From stdin: the raw spans of "data" and "metadata" are taken from the line.
  r = run({"append", "m"}, R"({"metadata":[ 1.0 ],"type":"Y","data":{"b":1, "a":[18446744073709551616,-0.0],"b":2}})"
                           "\n");
  ASSERT_EQ(r.code, 0) << r.err;
  line = first_line_of("m");
  EXPECT_NE(line.find(R"("data":{"b":1, "a":[18446744073709551616,-0.0],"b":2})"), std::string::npos) << line;
  EXPECT_NE(line.find(R"("metadata":[ 1.0 ])"), std::string::npos) << line;
}

TEST_F(Cli, DeepNestingIsRefusedWithAMessageNotACrash) {
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  auto r = run({"append", "s"}, R"({"type":"D","data":)" + deep + "}\n");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("deeper than 512"), std::string::npos) << r.err;

  prefix_ = "ulimit -s 1024; ";
  r = run({"append", "s", "--type", "D", "--data", std::string(20000, '[') + std::string(20000, ']')});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("deeper than 512"), std::string::npos) << r.err;
  prefix_.clear();

  // The documented depth itself is fine, in --data and in a stdin line.
  std::string ok = std::string(512, '[') + std::string(512, ']');
  EXPECT_EQ(run({"append", "s", "--type", "D", "--data", ok}).code, 0);
  EXPECT_EQ(run({"append", "s"}, R"({"type":"D","data":)" + ok + "}\n").code, 0);
  EXPECT_EQ(run({"append", "s", "--type", "D", "--data", "[" + ok + "]"}).code, 2);
  EXPECT_EQ(run({"read", "s"}).lines().size(), 2u);
}

TEST_F(Cli, OptionsForOneEventAreRefusedWithEventsOnStdin) {
  std::string line = "{\"type\":\"X\"}\n";
  for (std::vector<std::string> option : {std::vector<std::string>{"--id", Uuid::v4().to_string()},
                                          {"--id", "not-a-uuid"},
                                          {"--data", "{}"},
                                          {"--metadata", "{}"},
                                          {"--correlation-id", Uuid::v4().to_string()},
                                          {"--causation-id", Uuid::v4().to_string()}}) {
    std::vector<std::string> args = {"append", "s"};
    args.insert(args.end(), option.begin(), option.end());
    auto r = run(args, line);
    EXPECT_EQ(r.code, 2) << option[0] << ": " << r.err;
    EXPECT_NE(r.err.find(option[0]), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(store_)) << "nothing was written";
}

TEST_F(Cli, ReadOnlyCommandsNeverChangeFiles) {
  // Another program's SQLite database: refused, and left byte for byte as it was.
  auto foreign = (dir_.path() / "other.db").string();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(foreign.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE people (name TEXT); INSERT INTO people VALUES ('Ada')", nullptr, nullptr,
                           nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  std::string before = slurp(foreign);
  store_ = foreign;
  for (std::vector<std::string> command :
       {std::vector<std::string>{"stats"}, {"read", "$all"}, {"streams"}, {"info", "s"}, {"read", "s"}}) {
    auto r = run(command);
    EXPECT_EQ(r.code, 1) << command[0];
    EXPECT_NE(r.err.find("is not a sourced event store"), std::string::npos) << r.err;
  }
  EXPECT_EQ(slurp(foreign), before);
  EXPECT_FALSE(std::filesystem::exists(foreign + "-wal"));

  // A 0-byte file stays 0 bytes.
  auto empty = (dir_.path() / "empty.db").string();
  std::ofstream(empty).close();
  store_ = empty;
  auto r = run({"stats"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("is not a sourced event store"), std::string::npos) << r.err;
  EXPECT_EQ(run({"read", "$all"}).code, 1);
  EXPECT_EQ(std::filesystem::file_size(empty), 0u);

  // A device: a clear error, and no journal next to it.
  store_ = "/dev/null";
  r = run({"stats"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/dev/null"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists("/dev/null-journal"));
  EXPECT_FALSE(std::filesystem::exists("/dev/null-wal"));
}

TEST_F(Cli, FollowingAStoreThatDoesNotExistWaitsWithoutCreatingIt) {
  auto out = dir_.path() / "follow.out";
  std::string cmd = "timeout 60 " + quote(cli_binary()) + " --store " + quote(store_) +
                    " read '$all' --follow --count 1 >" + quote(out.string()) + " 2>&1 &";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_FALSE(std::filesystem::exists(store_)) << "the follower created the store";
  ASSERT_EQ(run({"append", "s", "--type", "First"}).code, 0);
  std::string printed;
  for (int i = 0; i < 200 && printed.find('\n') == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    printed = slurp(out);
  }
  EXPECT_NE(printed.find("\"First\""), std::string::npos) << printed;
}

TEST_F(Cli, FollowStopsWhenItsFileIsDeletedAndCreatedAgain) {
  ASSERT_EQ(run({"append", "s", "--type", "Old"}).code, 0);
  auto out = dir_.path() / "follow.out", code = dir_.path() / "follow.code";
  std::string cmd = "(timeout 60 " + quote(cli_binary()) + " --store " + quote(store_) + " read '$all' --follow >" +
                    quote(out.string()) + " 2>&1; echo $? >" + quote(code.string()) + ") &";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  for (int i = 0; i < 200 && slurp(out).find("Old") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(store_ + suffix);
  ASSERT_EQ(run({"append", "s", "--type", "New"}).code, 0);
  std::string status;
  for (int i = 0; i < 200 && status.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    status = slurp(code);
  }
  EXPECT_EQ(status, "1\n") << "the follower did not stop: " << slurp(out);
  EXPECT_NE(slurp(out).find("deleted or replaced"), std::string::npos) << slurp(out);
}

TEST_F(Cli, EventsThatAreNotJsonPrintLosslesslyAndNeverStopARead) {
  std::string bad = "\xff\xfe not UTF-8";
  {
    auto store = open_sqlite_store(store_);
    store->append("raw", ExpectedVersion::any(),
                  {event("Bad", bad, "\x80"), event("Text", "hello"), event("Quoted", "\"hello\""),
                   event("After", R"({"ok":true})")});
  }
  auto r = run({"read", "$all"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = r.lines();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(base64_decode(lines[0]["data_base64"]), bad);
  EXPECT_EQ(base64_decode(lines[0]["metadata_base64"]), "\x80");
  EXPECT_EQ(base64_decode(lines[1]["data_base64"]), "hello");
  EXPECT_EQ(lines[2]["data"], "hello") << "JSON text is JSON";
  EXPECT_EQ(lines[3]["data"]["ok"], true);

  // The lossless form can be appended back (here into another store, ids kept): the bytes arrive unchanged.
  store_ = (dir_.path() / "copy.db").string();
  r = run({"append", "copy"}, r.out);
  ASSERT_EQ(r.code, 0) << r.err;
  auto store = open_sqlite_store(store_);
  auto first = *store->read_stream("copy").next();
  EXPECT_EQ(first.id.to_string(), lines[0]["id"]);
  EXPECT_EQ(first.data, bad);
  EXPECT_EQ(first.metadata, "\x80");
}

// The lines of `read`, byte for byte, against lines built here from the stored events: every field, the
// escapes, payloads printed as given or as base64, and lines that cross or exceed the output buffer
// (256 KiB; read_command.cpp writes lines in place, a line longer than the buffer gets one of its own).
TEST_F(Cli, ReadPrintsExactlyTheseBytesForEveryKindOfEvent) {
  auto json_line = [](const RecordedEvent& e) {
    std::string s = "{\"stream\":" + json(e.stream).dump() + ",\"version\":" + std::to_string(e.version.value()) +
                    ",\"position\":" + std::to_string(e.position.value()) + ",\"id\":\"" + e.id.to_string() +
                    "\",\"type\":" + json(e.type).dump();
    auto payload = [&](const std::string& name, const std::string& bytes) {
      if (bytes.empty()) return;
      if (e.content_type == ContentType::json || json::accept(bytes)) {
        std::string one_line = bytes;
        for (char& c : one_line) c = c == '\n' || c == '\r' ? ' ' : c;
        s += ",\"" + name + "\":" + one_line;
      } else {
        std::string b64;
        static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (std::size_t i = 0; i < bytes.size(); i += 3) {
          std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
          if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
          if (i + 2 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 2]);
          b64 += kAlphabet[v >> 18];
          b64 += kAlphabet[v >> 12 & 63];
          b64 += i + 1 < bytes.size() ? kAlphabet[v >> 6 & 63] : '=';
          b64 += i + 2 < bytes.size() ? kAlphabet[v & 63] : '=';
        }
        s += ",\"" + name + "_base64\":\"" + b64 + "\"";
      }
    };
    payload("data", e.data);
    payload("metadata", e.metadata);
    s += ",\"created_at\":\"" + format_timestamp(e.created_at) + "\"";
    if (e.correlation_id) s += ",\"correlation_id\":\"" + e.correlation_id->to_string() + "\"";
    if (e.causation_id) s += ",\"causation_id\":\"" + e.causation_id->to_string() + "\"";
    return s + "}\n";
  };
  auto text_line = [](const RecordedEvent& e) {
    std::string pos = std::to_string(e.position.value());
    std::string data = e.data;
    for (char& c : data) c = c == '\n' || c == '\r' ? ' ' : c;
    return "#" + pos + std::string(pos.size() < 8 ? 8 - pos.size() : 0, ' ') + " " + e.stream + "@" +
           std::to_string(e.version.value()) + " " + e.type + " " + format_timestamp(e.created_at) + " " + data + "\n";
  };
  {
    auto store = open_sqlite_store(store_);
    EventData linked = event("Linked", R"({"a":[1,2.5e3,"x\"y"]})", R"({"user":"ü"})");
    linked.correlation_id = Uuid::parse("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
    linked.causation_id = Uuid::parse("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c");
    EventData lines_in_json = event("Multi\\Line\"Type", "{\n\"a\":\r\n1}", "");
    lines_in_json.content_type = ContentType::json;
    EventData binary = event("Binary", std::string("\x00\x01\xff", 3), R"({"m":1})");
    binary.content_type = ContentType::binary;
    EventData empty = event("Empty", "", "");
    store->append("quoted\"stream\\ü-1", ExpectedVersion::any(),
                  {linked, lines_in_json, binary, empty, event("Raw", "ab", "abcd"), event("Text", "\"t\"", "7")});
    // A line larger than the whole output buffer, between lines that fill it several times over.
    std::vector<EventData> many;
    for (int i = 0; i < 2000; ++i) many.push_back(event("Filler", R"({"pad":")" + std::string(300, 'p') + "\"}"));
    store->append("filler-1", ExpectedVersion::any(), many);
    store->append("huge-1", ExpectedVersion::any(),
                  {event("Huge", R"({"big":")" + std::string(700 << 10, 'h') + "\"}", std::string(1000, '\x80'))});
    store->append("filler-2", ExpectedVersion::any(), many);
  }
  auto store = open_sqlite_store(store_);
  std::string want_json, want_text, want_back;
  for (const auto& e : store->read_all().to_vector()) {
    want_json += json_line(e);
    want_text += text_line(e);
  }
  for (const auto& e : store->read_all({.direction = Direction::backward}).to_vector()) want_back += json_line(e);
  auto r = run({"read", "$all"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.out == want_json)
      << "first difference at byte "
      << std::mismatch(r.out.begin(), r.out.end(), want_json.begin(), want_json.end()).first - r.out.begin();
  r = run({"read", "$all", "--format", "text"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.out == want_text) << r.out.substr(0, 2000);
  r = run({"read", "$all", "--backward"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.out == want_back);
  r = run({"read", "quoted\"stream\\ü-1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, want_json.substr(0, r.out.size()));
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 6);
}

TEST_F(Cli, AppendsSayWhetherTheyAreJsonAndReadsTrustWhatWasSaid) {
  ASSERT_EQ(run({"append", "ct", "--type", "A", "--data", R"({"a":1})"}).code, 0);
  ASSERT_EQ(run({"append", "ct"}, "{\"type\":\"B\",\"data\":[1]}\n{\"type\":\"C\",\"data_base64\":\"aGk=\"}\n").code,
            0);
  // Nested deeper than the CLI's checker allows (but JSON): printed as given only when marked json.
  std::string deep = std::string(600, '[') + std::string(600, ']');
  {
    auto store = open_sqlite_store(store_);
    auto events = store->read_stream("ct").to_vector();
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events[0].content_type, ContentType::json);
    EXPECT_EQ(events[1].content_type, ContentType::json);
    EXPECT_EQ(events[2].content_type, ContentType::binary);
    EventData trusted = event("Trusted", deep, "");
    trusted.content_type = ContentType::json;
    store->append("deep", ExpectedVersion::any(), {trusted, event("Checked", deep, "")});
  }
  auto r = run({"read", "ct"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = r.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1]["data"], json::parse("[1]"));
  EXPECT_EQ(base64_decode(lines[2]["data_base64"]), "hi");
  r = run({"read", "deep"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto out = r.out;
  auto second = out.find('\n');
  ASSERT_NE(second, std::string::npos);
  EXPECT_NE(out.substr(0, second).find("\"data\":" + deep), std::string::npos) << "json is printed unchecked";
  EXPECT_NE(out.substr(second).find("\"data_base64\":"), std::string::npos) << "unknown is checked";
}

// A store written before content types existed (schema version 1; also one made before the file carried
// its application id): the read commands open it read-only, so they leave it as it is, and print its events,
// all of unknown content type, as any: the JSON ones as JSON, the rest losslessly as base64. The first
// command that writes migrates it, and its old events print as before.
TEST_F(Cli, AStoreWrittenBeforeContentTypesIsReadAsItIsAndMigratedByTheFirstWrite) {
  const std::string rows = R"sql(
    INSERT INTO streams VALUES (1, 'account-1', 0, 0, 1700000000000000, 1700000000000002);
    INSERT INTO streams VALUES (2, 'gone', 1, 0, 1700000000000003, 1700000000000004);
    INSERT INTO events VALUES (1, 1, 1, x'0123456789abcdef0123456789abcdef', 'Opened', '{"owner":"Ada"}',
      '{"user":"x"}', x'00112233445566778899aabbccddeeff', NULL, 1700000000000000);
    INSERT INTO events VALUES (2, 1, 2, x'1123456789abcdef0123456789abcdef', 'Noted', 'hello', '', NULL, NULL,
      1700000000000001);
    INSERT INTO events VALUES (3, 1, 3, x'2123456789abcdef0123456789abcdef', 'Raw', x'fffe00', x'80', NULL, NULL,
      1700000000000002);
    INSERT INTO events VALUES (4, 2, 1, x'3123456789abcdef0123456789abcdef', 'Closed', '[1,2]', '{}', NULL, NULL,
      1700000000000003);
  )sql";
  for (bool application_id : {true, false}) {
    SCOPED_TRACE(application_id ? "a version-1 store" : "a version-1 store without an application id");
    store_ = (dir_.path() / (application_id ? "v1.db" : "v1-no-id.db")).string();
    write_version_1_store(store_, rows, application_id);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    const std::string before = slurp(store_);

    auto r = run({"info", "account-1"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto info = json::parse(r.out);
    EXPECT_EQ(info["status"], "active");
    EXPECT_EQ(info["last_version"], 3);
    EXPECT_EQ(info["event_count"], 3);
    EXPECT_EQ(info["created_at"], "2023-11-14T22:13:20.000000Z");
    info = json::parse(run({"info", "gone"}).out);
    EXPECT_EQ(info["status"], "soft_deleted") << "hidden_through 1 of 1";
    EXPECT_EQ(info["last_version"], 1);
    EXPECT_EQ(info["event_count"], 0);

    r = run({"read", "account-1"});
    ASSERT_EQ(r.code, 0) << r.err;
    auto lines = r.lines();
    ASSERT_EQ(lines.size(), 3u) << r.out;
    EXPECT_EQ(lines[0]["id"], "01234567-89ab-cdef-0123-456789abcdef");
    EXPECT_EQ(lines[0]["type"], "Opened");
    EXPECT_EQ(lines[0]["data"], json::parse(R"({"owner":"Ada"})")) << "JSON of unknown content type is JSON";
    EXPECT_EQ(lines[0]["metadata"], json::parse(R"({"user":"x"})"));
    EXPECT_EQ(lines[0]["correlation_id"], "00112233-4455-6677-8899-aabbccddeeff");
    EXPECT_EQ(lines[0]["created_at"], "2023-11-14T22:13:20.000000Z");
    EXPECT_EQ(base64_decode(lines[1]["data_base64"]), "hello");
    EXPECT_FALSE(lines[1].contains("metadata")) << "no bytes, no field";
    EXPECT_EQ(base64_decode(lines[2]["data_base64"]), std::string("\xff\xfe\0", 3));
    EXPECT_EQ(base64_decode(lines[2]["metadata_base64"]), "\x80");
    EXPECT_EQ(lines[2]["created_at"], "2023-11-14T22:13:20.000002Z");
    EXPECT_EQ(run({"read", "gone"}).code, 4) << "soft-deleted";
    r = run({"read", "$all"});
    ASSERT_EQ(r.code, 0) << r.err;
    lines = r.lines();
    ASSERT_EQ(lines.size(), 4u) << r.out;
    EXPECT_EQ(lines[3]["stream"], "gone");
    EXPECT_EQ(lines[3]["data"], json::parse("[1,2]"));
    EXPECT_EQ(json::parse(run({"stats"}).out)["head_position"], 4);
    r = run({"subscriptions"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "") << "a version-1 store has no subscriptions";

    EXPECT_EQ(user_version(store_), 1) << "a read-only command migrated the store";
    EXPECT_EQ(slurp(store_), before) << "a read-only command changed the file";

    // The first write migrates it (to the engine's current version: 3 since the subscription tables).
    r = run({"append", "account-1", "--type", "Renamed", "--data", R"({"owner":"Ada L."})", "--expected", "3"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["last_position"], 5);
    EXPECT_EQ(user_version(store_), 3);
    lines = run({"read", "account-1"}).lines();
    ASSERT_EQ(lines.size(), 4u);
    EXPECT_EQ(lines[0]["data"], json::parse(R"({"owner":"Ada"})"));
    EXPECT_EQ(base64_decode(lines[1]["data_base64"]), "hello");
    EXPECT_EQ(base64_decode(lines[2]["data_base64"]), std::string("\xff\xfe\0", 3));
    EXPECT_EQ(lines[3]["data"], json::parse(R"({"owner":"Ada L."})"));
    EXPECT_EQ(json::parse(run({"info", "account-1"}).out)["last_version"], 4);
  }
}

TEST_F(Cli, ExitCodesForBadNumbersAndUrls) {
  EXPECT_EQ(run({"append", "s", "--type", "X", "--data", R"({"n":1e400})"}).code, 2);
  EXPECT_EQ(run({"append", "s"}, "{\"type\":\"X\",\"data\":{\"n\":-1e400}}\n").code, 2);
  EXPECT_EQ(run({"read", "$all", "--from", "-1"}).code, 2);
  EXPECT_EQ(run({"read", "$all", "--count", "-1"}).code, 2);
  EXPECT_EQ(run({"read", "$all", "--count", "99999999999999999999"}).code, 2);
  for (std::string url : {"postgres://u@127.0.0.1:1/db?bogus=1", "postgres://u@127.0.0.1:1/db?pool_size=0",
                          "postgres://u@[::1/db", "postgres://u@127.0.0.1:notaport/db"}) {
    store_ = url;
    auto r = run({"stats"});
    EXPECT_EQ(r.code, 2) << url << ": " << r.err;
  }
  // The scheme is matched whatever its case: this is a server (down), not a file named "POSTGRES:".
  auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_.path());
  store_ = "POSTGRES://u@127.0.0.1:1/db";
  auto r = run({"append", "s", "--type", "X"});
  std::filesystem::current_path(cwd);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("PostgreSQL"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "POSTGRES:"));
}

TEST_F(Cli, AMalformedUrlNeverShowsItsPassword) {
  for (std::string url : {"postgres://u:s3cret-pw@[::1/db", "postgres://u:s3cret-pw@127.0.0.1:1/db?bogus=1",
                          "postgres://u:s3cr%zz@127.0.0.1:1/db", "postgresql://127.0.0.1:1/db?password=s3cret-pw&x"}) {
    store_ = url;
    auto r = run({"stats"});
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(r.err.find("s3cr"), std::string::npos) << r.err;
    EXPECT_FALSE(r.err.empty());
  }
}

TEST_F(Cli, AReusedEventIdHasItsOwnExitCodeAndOneAppendGetsOneError) {
  std::string a = Uuid::v4().to_string();
  ASSERT_EQ(run({"append", "s"}, "{\"type\":\"A\",\"id\":\"" + a + "\"}\n{\"type\":\"X\"}\n").code, 0);
  auto r = run({"append", "other", "--type", "A", "--id", a});
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_NE(r.err.find(a), std::string::npos) << r.err;
  // The stream is at version 2, A at version 1: with --expected 5, [A] and [A, B] get the same error.
  EXPECT_EQ(run({"append", "s", "--type", "A", "--id", a, "--expected", "5"}).code, 3);
  EXPECT_EQ(run({"append", "s", "--expected", "5"}, "{\"type\":\"A\",\"id\":\"" + a + "\"}\n{\"type\":\"B\"}\n").code,
            3);
}

TEST_F(Cli, ACommittedAppendIsNeverReportedAsAFailureToRetry) {
  // stdout cannot be written: the append committed, so the result goes to stderr with its own exit code.
  std::string cmd = quote(cli_binary()) + " --store " + quote(store_) + " append s --type A >/dev/full 2>" +
                    quote((dir_.path() / "err").string());
  int status = std::system(cmd.c_str());
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 7);
  std::string err = slurp(dir_.path() / "err");
  auto brace = err.find("{\"stream\"");
  ASSERT_NE(brace, std::string::npos) << err;
  auto result = json::parse(err.substr(brace));
  ASSERT_EQ(result["ids"].size(), 1u);
  // The retry the message asks for, with the same id, is a no-op.
  auto r = run({"append", "s", "--type", "A", "--id", result["ids"][0]});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["replayed"], true);
  EXPECT_EQ(run({"read", "s"}).lines().size(), 1u);

  // An in-memory store would acknowledge appends that vanish when the command exits.
  store_ = "memory:";
  r = run({"append", "s", "--type", "A"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("memory:"), std::string::npos) << r.err;
  EXPECT_EQ(run({"delete", "s"}).code, 2);
  EXPECT_EQ(run({"read", "$all"}).code, 0) << "reading an empty in-memory store is harmless";
}

// --- persistent subscriptions ------------------------------------------------------------------------

// A shell command that runs `cli_args` in the background: its stdout, stderr and exit code go to `base`.out,
// .err and .code, the pid of the shell that waits for it to .pid.
std::string background_cmd(const std::string& cli_args, const std::filesystem::path& base) {
  return "(timeout 60 " + cli_args + " >" + quote(base.string() + ".out") + " 2>" + quote(base.string() + ".err") +
         "; echo $? >" + quote(base.string() + ".code") + ") & echo $! >" + quote(base.string() + ".pid");
}

// What the background command of `base` exited with ("0\n"), once it has.
std::string exit_code_of(const std::filesystem::path& base) {
  std::string code;
  for (int i = 0; i < 400 && (code = slurp(base.string() + ".code")).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return code;
}

// SIGTERM to the tool started by background_cmd(`base`) (the child of its `timeout`).
void terminate_tool(const std::filesystem::path& base) {
  std::string pid = slurp(base.string() + ".pid");
  pid.erase(pid.find_last_not_of('\n') + 1);
  std::system(("pkill -TERM -x sourced -P $(pgrep -x timeout -P " + pid + ")").c_str());
}

TEST_F(Cli, SubscriptionsAreCreatedListedShownAndDeleted) {
  ASSERT_EQ(run({"append", "account-1", "--type", "Opened"}).code, 0);
  ASSERT_EQ(run({"append", "account-1", "--type", "Deposited"}).code, 0);
  ASSERT_EQ(run({"append", "order-1", "--type", "Placed"}).code, 0);
  auto r = run({"subscription", "create", "mailer", "--category", "account", "--type", "Deposited", "--max-in-flight",
                "5", "--max-attempts", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto created = json::parse(r.out);
  EXPECT_EQ(created["name"], "mailer");
  EXPECT_EQ(created["source"], json::parse(R"({"stream":"$all","category":"account","types":["Deposited"]})"));
  EXPECT_EQ(created["checkpoint"], 0);
  EXPECT_EQ(created["head"], 3);
  EXPECT_EQ(created["lag"], 3);
  EXPECT_EQ(created["max_in_flight"], 5);
  EXPECT_EQ(created["max_attempts"], 2);
  EXPECT_EQ(created["holder"], nullptr);
  EXPECT_EQ(created["parked"], 0);

  r = run({"subscription", "create", "audit", "--stream", "account-1", "--from", "end"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["checkpoint"], 2) << "end: after the stream's last version";
  EXPECT_EQ(json::parse(r.out)["lag"], 0);
  r = run({"subscription", "create", "late", "--from", "3"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["checkpoint"], 2) << "--from is the first position delivered, as in read";

  r = run({"subscriptions"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = r.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["name"], "audit");
  EXPECT_EQ(lines[0]["source"]["stream"], "account-1");
  EXPECT_EQ(lines[0]["head"], 2);
  EXPECT_EQ(lines[1]["name"], "late");
  EXPECT_EQ(lines[2]["name"], "mailer");

  r = run({"subscription", "info", "mailer"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["lag"], 3);
  EXPECT_EQ(run({"subscription", "parked", "mailer"}).out, "");

  r = run({"subscription", "create", "mailer"});
  EXPECT_EQ(r.code, 9) << r.err;
  EXPECT_NE(r.err.find("mailer"), std::string::npos) << r.err;
  EXPECT_EQ(run({"subscription", "delete", "mailer"}).code, 0);
  EXPECT_EQ(run({"subscription", "info", "mailer"}).code, 8);
  EXPECT_EQ(run({"subscription", "parked", "mailer"}).code, 8);
  EXPECT_EQ(run({"subscription", "replay-parked", "mailer"}).code, 8);
  EXPECT_EQ(run({"subscription", "delete", "mailer"}).code, 8);
  EXPECT_EQ(run({"subscription", "consume", "mailer"}).code, 8);
  EXPECT_EQ(run({"subscriptions"}).lines().size(), 2u);
}

// A failing event handler's error is where an operator looks: `sourced subscriptions` (and `subscription
// info`) print it as last_error, and `subscription parked` lists the parked event with it.
TEST_F(Cli, AFailingEventHandlersErrorIsShownBySubscriptions) {
  ASSERT_EQ(run({"append", "account-1", "--type", "Opened"}).code, 0);
  ASSERT_EQ(run({"append", "account-1", "--type", "Poison"}).code, 0);
  ASSERT_EQ(run({"append", "account-2", "--type", "Bounce"}).code, 0);
  {
    auto store = open_sqlite_store(store_);
    EventHandler mailer{.name = "mailer",
                        .filter = EventFilter{.category = "account"},
                        .handle =
                            [](const HandledEvent& h) {
                              if (h.event.type == "Poison") throw std::runtime_error("cannot render Poison");
                              if (h.event.type == "Bounce") throw std::runtime_error("mailbox full");
                            },
                        .on_failure =
                            [](const std::exception& e, const HandledEvent&) {
                              return std::string(e.what()) == "mailbox full" ? FailureDecision::skip()
                                                                             : FailureDecision::park();
                            }};
    EventHandlerRunner runner(*store, mailer, {.log = [](std::string_view) {}});
    ASSERT_TRUE(runner.wait_for(Position(3), std::chrono::seconds(10)));
  }
  auto r = run({"subscriptions"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = r.lines();
  ASSERT_EQ(lines.size(), 1u) << r.out;
  EXPECT_EQ(lines[0]["name"], "mailer");
  EXPECT_EQ(lines[0]["checkpoint"], 3);
  EXPECT_EQ(lines[0]["parked"], 1);
  ASSERT_TRUE(lines[0]["last_error"].is_string()) << r.out;
  std::string error = lines[0]["last_error"];
  EXPECT_NE(error.find("account-2@1 (position 3, event "), std::string::npos) << error;
  EXPECT_NE(error.find("attempt 1): mailbox full"), std::string::npos) << error;
  EXPECT_EQ(json::parse(run({"subscription", "info", "mailer"}).out)["last_error"], error);
  auto parked = run({"subscription", "parked", "mailer"}).lines();
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0]["position"], 2);
  EXPECT_EQ(parked[0]["type"], "Poison");
  EXPECT_NE(parked[0]["error"].get<std::string>().find("cannot render Poison"), std::string::npos);
}

TEST_F(Cli, SubscriptionInputIsCheckedBeforeTheStoreIsTouched) {
  for (std::vector<std::string> command : {std::vector<std::string>{"subscription", "create", "bad name"},
                                           {"subscription", "create", "s", "--max-in-flight", "0"},
                                           {"subscription", "create", "s", "--max-attempts", "x"},
                                           {"subscription", "create", "s", "--from", "later"},
                                           {"subscription", "create", "s", "--stream", "a-1", "--category", "a"},
                                           {"subscription", "create", "s", "--category", "a-b"},
                                           {"subscription", "create", "s", "--stream", "bad\nid"},
                                           {"subscription", "delete", ""},
                                           {"subscription", "replay-parked", "bad/name"},
                                           {"subscription", "consume", "s", "--count", "-1"},
                                           {"subscription", "consume", "bad name"},
                                           {"subscription"}}) {
    auto r = run(command);
    EXPECT_EQ(r.code, 2) << ::testing::PrintToString(command) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(store_));
  // Reading commands on a store that does not exist do not create it.
  EXPECT_EQ(run({"subscriptions"}).code, 0);
  EXPECT_EQ(run({"subscription", "info", "s"}).code, 8);
  EXPECT_EQ(run({"subscription", "parked", "s"}).code, 8);
  EXPECT_FALSE(std::filesystem::exists(store_));
}

TEST_F(Cli, ConsumePrintsAcknowledgesAndResumesAfterItsCheckpoint) {
  for (std::string type : {"A", "B", "C", "D", "E"}) ASSERT_EQ(run({"append", "s-1", "--type", type}).code, 0);
  ASSERT_EQ(run({"subscription", "create", "sub", "--stream", "s-1"}).code, 0);
  auto r = run({"subscription", "consume", "sub", "--count", "3"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = r.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["type"], "A");
  EXPECT_EQ(lines[2]["type"], "C");
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), first_line_of("s-1")) << "the read format";
  auto info = json::parse(run({"subscription", "info", "sub"}).out);
  EXPECT_EQ(info["checkpoint"], 3);
  EXPECT_EQ(info["lag"], 2);
  EXPECT_EQ(info["holder"], nullptr) << "released on exit";
  r = run({"subscription", "consume", "sub", "--count", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  lines = r.lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["type"], "D");
  EXPECT_EQ(lines[1]["type"], "E");
  EXPECT_EQ(json::parse(run({"subscription", "info", "sub"}).out)["lag"], 0);
}

TEST_F(Cli, ConsumeWithExecAcknowledgesOnSuccessAndParksWhatKeepsFailing) {
  for (std::string type : {"Good1", "Bad", "Good2"}) ASSERT_EQ(run({"append", "s-1", "--type", type}).code, 0);
  ASSERT_EQ(run({"subscription", "create", "sub", "--max-attempts", "2"}).code, 0);
  auto handled = dir_.path() / "handled";
  std::string handler =
      "read line; case \"$line\" in *'\"Bad\"'*) exit 3;; esac; echo \"$line\" >>" + quote(handled.string());
  // --count counts events settled: Good1 and Good2 handled, Bad parked after its second failure.
  auto r = run({"subscription", "consume", "sub", "--count", "3", "--exec", handler});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "") << "the handler's output only";
  std::ifstream f(handled);
  std::vector<std::string> types;
  for (std::string line; std::getline(f, line);) types.push_back(json::parse(line)["type"]);
  EXPECT_EQ(types, (std::vector<std::string>{"Good1", "Good2"}));

  r = run({"subscription", "parked", "sub"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto parked = r.lines();
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0]["type"], "Bad");
  EXPECT_EQ(parked[0]["position"], 2);
  EXPECT_EQ(parked[0]["attempts"], 2);
  EXPECT_NE(parked[0]["error"].get<std::string>().find("status 3"), std::string::npos) << parked[0];
  auto info = json::parse(run({"subscription", "info", "sub"}).out);
  EXPECT_EQ(info["checkpoint"], 3);
  EXPECT_EQ(info["parked"], 1);

  r = run({"subscription", "replay-parked", "sub"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["replay_requested"], 1);
  r = run({"subscription", "consume", "sub", "--count", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(r.lines().size(), 1u);
  EXPECT_EQ(r.lines()[0]["type"], "Bad");
  EXPECT_EQ(run({"subscription", "parked", "sub"}).out, "") << "handled on replay: no longer parked";
}

TEST_F(Cli, OneConsumerAtATimeAndSigtermStopsItCleanly) {
  ASSERT_EQ(run({"append", "s-1", "--type", "A"}).code, 0);
  ASSERT_EQ(run({"subscription", "create", "sub"}).code, 0);
  auto base = dir_.path() / "first";
  std::string cmd = quote(cli_binary()) + " --store " + quote(store_) + " subscription consume sub";
  ASSERT_EQ(std::system(background_cmd(cmd, base).c_str()), 0);
  auto out_lines = [&] {
    std::vector<json> v;
    std::ifstream f(base.string() + ".out");
    for (std::string line; std::getline(f, line);) {
      if (f.eof()) break;
      v.push_back(json::parse(line));
    }
    return v;
  };
  auto wait_lines = [&](std::size_t n) {
    for (int i = 0; i < 300 && out_lines().size() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return out_lines().size();
  };
  ASSERT_EQ(wait_lines(1), 1u);
  ASSERT_EQ(run({"append", "s-1", "--type", "B"}).code, 0);
  ASSERT_EQ(wait_lines(2), 2u) << "live events reach the consumer";

  auto second = run({"subscription", "consume", "sub"});
  EXPECT_EQ(second.code, 10) << second.err;
  EXPECT_NE(second.err.find("sub"), std::string::npos) << second.err;
  auto info = json::parse(run({"subscription", "info", "sub"}).out);
  EXPECT_NE(info["holder"], nullptr);
  EXPECT_EQ(run({"subscriptions"}).lines().at(0)["holder"], info["holder"]);

  // A consumer that waits for the lease takes over when the first one stops.
  auto waiter = dir_.path() / "waiter";
  ASSERT_EQ(std::system(background_cmd(cmd + " --wait --count 1", waiter).c_str()), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(slurp(waiter.string() + ".code"), "") << "it waits while the first one holds the subscription";

  // SIGTERM: exit code 0, the acks saved, the lease released.
  terminate_tool(base);
  EXPECT_EQ(exit_code_of(base), "0\n") << slurp(base.string() + ".err");
  EXPECT_EQ(json::parse(run({"subscription", "info", "sub"}).out)["checkpoint"], 2);
  EXPECT_EQ(run({"subscription", "consume", "sub", "--count", "0"}).code, 0);
  ASSERT_EQ(run({"append", "s-1", "--type", "C"}).code, 0);
  EXPECT_EQ(exit_code_of(waiter), "0\n") << slurp(waiter.string() + ".err");
  EXPECT_EQ(json::parse(run({"subscription", "info", "sub"}).out)["holder"], nullptr);
  EXPECT_NE(slurp(waiter.string() + ".out").find("\"type\":\"C\""), std::string::npos)
      << slurp(waiter.string() + ".out");
}

TEST_F(Cli, FollowTakesTheFilters) {
  auto base = dir_.path() / "follow";
  std::string cmd = quote(cli_binary()) + " --store " + quote(store_) +
                    " read '$all' --follow --category account --type Deposited --count 2";
  ASSERT_EQ(run({"append", "account-1", "--type", "Deposited"}).code, 0);
  ASSERT_EQ(std::system(background_cmd(cmd, base).c_str()), 0);
  ASSERT_EQ(run({"append", "order-1", "--type", "Deposited"}).code, 0);
  ASSERT_EQ(run({"append", "account-2", "--type", "Opened"}).code, 0);
  ASSERT_EQ(run({"append", "account-2", "--type", "Deposited"}).code, 0);
  EXPECT_EQ(exit_code_of(base), "0\n") << slurp(base.string() + ".err");
  std::vector<std::string> streams;
  std::istringstream s(slurp(base.string() + ".out"));
  for (std::string line; std::getline(s, line);) streams.push_back(json::parse(line)["stream"]);
  EXPECT_EQ(streams, (std::vector<std::string>{"account-1", "account-2"}));
}

}  // namespace
}  // namespace sourced::testing
