// Crash safety of the SQLite engine: a child appends in a loop and reports each acknowledged append; it is
// killed with SIGKILL at random moments, many times. After each kill the store must open, hold every
// acknowledged event where it was acknowledged, contain no half-written append, and have gapless positions.

#include <map>
#include <random>
#include <sstream>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

struct Ack {
  std::string batch, stream;
  std::uint64_t first_version, last_version, first_position, last_position;
};

// Runs the writer for `run_ms`, kills it with SIGKILL, returns the appends it acknowledged.
std::vector<Ack> run_and_kill(const std::string& store, int run_ms) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execl(CRASH_WRITER, CRASH_WRITER, store.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string buffer;
  auto drain = [&](int timeout_ms) {
    pollfd p{fds[0], POLLIN, 0};
    char chunk[65536];
    while (::poll(&p, 1, timeout_ms) > 0) {
      ssize_t n = ::read(fds[0], chunk, sizeof chunk);
      if (n <= 0) return false;
      buffer.append(chunk, n);
    }
    return true;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
  while (std::chrono::steady_clock::now() < deadline) drain(5);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  while (drain(100)) {
  }
  ::close(fds[0]);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the writer died on its own (a crash or an exception), not by our SIGKILL: status " << status;

  std::vector<Ack> acks;
  std::istringstream in(buffer);
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // a line cut by the kill was never acknowledged
    std::istringstream l(line);
    Ack a;
    l >> a.batch >> a.stream >> a.first_version >> a.last_version >> a.first_position >> a.last_position;
    acks.push_back(a);
  }
  return acks;
}

TEST(CrashSafety, AcknowledgedAppendsSurviveSigkillAndNoneIsHalfWritten) {
  TempDir dir;
  std::string path = (dir.path() / "crash.db").string();
  std::mt19937 rng(7);
  std::vector<Ack> acknowledged;
  constexpr int kKills = 25;
  for (int kill = 0; kill < kKills; ++kill) {
    SCOPED_TRACE("after kill " + std::to_string(kill + 1));
    auto acks = run_and_kill(path, 40 + static_cast<int>(rng() % 250));
    acknowledged.insert(acknowledged.end(), acks.begin(), acks.end());

    auto store = open_sqlite_store(path);
    auto head = store->head_position().value();
    std::map<std::string, std::vector<std::pair<std::uint64_t, std::uint64_t>>> batches;  // batch -> (index, pos)
    std::map<std::string, std::uint64_t> batch_size;
    std::map<std::string, std::uint64_t> stream_version;
    std::vector<RecordedEvent> all = store->read_all().to_vector();
    ASSERT_EQ(all.size(), head);
    for (std::size_t i = 0; i < all.size(); ++i) {
      const auto& e = all[i];
      ASSERT_EQ(e.position.value(), i + 1) << "positions have a gap";
      ASSERT_EQ(e.version.value(), ++stream_version[e.stream]) << "versions of " << e.stream << " have a gap";
      auto d = nlohmann::json::parse(e.data);
      batches[d["batch"]].emplace_back(d["index"], e.position.value());
      batch_size[d["batch"]] = d["size"];
    }
    for (const auto& [batch, events] : batches) {
      ASSERT_EQ(events.size(), batch_size[batch]) << "append " << batch << " is half-written";
      for (std::size_t i = 0; i < events.size(); ++i) {
        ASSERT_EQ(events[i].first, i);
        ASSERT_EQ(events[i].second, events[0].second + i) << "append " << batch << " is not contiguous";
      }
    }
    for (const auto& a : acknowledged) {
      ASSERT_TRUE(a.first_position <= head) << "acknowledged append " << a.batch << " was lost";
      const auto& e = all[a.first_position - 1];
      ASSERT_EQ(e.stream, a.stream);
      ASSERT_EQ(e.version.value(), a.first_version);
      ASSERT_EQ(nlohmann::json::parse(e.data)["batch"], a.batch) << "acknowledged append moved or was lost";
      ASSERT_EQ(batches[a.batch].size(), a.last_position - a.first_position + 1);
    }
  }
  EXPECT_GT(acknowledged.size(), 100u) << "the writer should have made progress";
}

}  // namespace
}  // namespace sourced::testing
