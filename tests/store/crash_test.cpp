// Crash safety of the SQLite engine: a child appends in a loop and reports each acknowledged append; it is
// killed with SIGKILL at random moments, many times. After each kill the store must open, hold every
// acknowledged event where it was acknowledged, contain no half-written append, and have gapless positions.

#include <map>
#include <random>
#include <set>
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

// Runs `processes` writers on one store for `run_ms`, kills them all with SIGKILL, returns the appends they
// acknowledged.
std::vector<Ack> run_and_kill(const std::string& store, int run_ms, int processes = 1, const char* mode = nullptr) {
  struct Child {
    pid_t pid;
    int fd;
    std::string buffer;
  };
  std::vector<Child> children;
  for (int i = 0; i < processes; ++i) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      ::execl(CRASH_WRITER, CRASH_WRITER, store.c_str(), mode, static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    children.push_back({pid, fds[0], {}});
  }
  // Reads what is ready from every pipe; false once every pipe is closed.
  auto drain = [&](int timeout_ms) {
    std::vector<pollfd> polls;
    for (const auto& c : children) {
      if (c.fd >= 0) polls.push_back({c.fd, POLLIN, 0});
    }
    if (polls.empty() || ::poll(polls.data(), polls.size(), timeout_ms) <= 0) return !polls.empty();
    for (auto& c : children) {
      for (const auto& p : polls) {
        if (p.fd != c.fd || !(p.revents & (POLLIN | POLLHUP))) continue;
        char chunk[65536];
        ssize_t n = ::read(c.fd, chunk, sizeof chunk);
        if (n > 0) {
          c.buffer.append(chunk, n);
        } else {
          ::close(c.fd);
          c.fd = -1;
        }
      }
    }
    return true;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(run_ms);
  while (std::chrono::steady_clock::now() < deadline) drain(5);
  for (const auto& c : children) ::kill(c.pid, SIGKILL);
  for (const auto& c : children) {
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "a writer died on its own (a crash or an exception), not by our SIGKILL: status " << status;
  }
  while (drain(100)) {
  }

  std::vector<Ack> acks;
  for (const auto& c : children) {
    std::istringstream in(c.buffer);
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // a line cut by the kill was never acknowledged
      std::istringstream l(line);
      Ack a;
      l >> a.batch >> a.stream >> a.first_version >> a.last_version >> a.first_position >> a.last_position;
      acks.push_back(a);
    }
  }
  return acks;
}

// Opens the store and checks it against everything acknowledged so far: every acknowledged append is
// where it was acknowledged, no append is half-written, positions and versions have no gaps.
void verify(const std::string& path, const std::vector<Ack>& acknowledged) {
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
  std::set<std::uint64_t> acknowledged_positions;
  for (const auto& a : acknowledged) {
    ASSERT_TRUE(a.first_position <= head) << "acknowledged append " << a.batch << " was lost";
    ASSERT_TRUE(acknowledged_positions.insert(a.first_position).second)
        << "position " << a.first_position << " acknowledged to two appends";
    const auto& e = all[a.first_position - 1];
    ASSERT_EQ(e.stream, a.stream);
    ASSERT_EQ(e.version.value(), a.first_version);
    ASSERT_EQ(nlohmann::json::parse(e.data)["batch"], a.batch) << "acknowledged append moved or was lost";
    ASSERT_EQ(batches[a.batch].size(), a.last_position - a.first_position + 1);
  }
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
    verify(path, acknowledged);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(acknowledged.size(), 100u) << "the writer should have made progress";
}

// Writers that open the store, append once and close it, over and over (a sequence of CLI `append`
// processes): a closed store keeps its WAL and checkpoints it only once it is large, so kills land while
// the WAL is kept, read back by the next open, checkpointed or emptied at close.
TEST(CrashSafety, OneShotWritersThatKeepTheirWalSurviveSigkill) {
  TempDir dir;
  std::string path = (dir.path() / "one-shot.db").string();
  std::mt19937 rng(11);
  std::vector<Ack> acknowledged;
  for (int kill = 0; kill < 8; ++kill) {
    SCOPED_TRACE("after kill " + std::to_string(kill + 1));
    auto acks = run_and_kill(path, 100 + static_cast<int>(rng() % 300), 1 + kill % 2, "one-shot");
    acknowledged.insert(acknowledged.end(), acks.begin(), acks.end());
    verify(path, acknowledged);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(acknowledged.size(), 30u) << "the writers should have made progress";
}

TEST(CrashSafety, SeveralProcessesShareOneFile) {
  // Three processes of four threads each append to the same streams of one file, and are killed together.
  TempDir dir;
  std::string path = (dir.path() / "shared.db").string();
  std::vector<Ack> acknowledged;
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round + 1));
    auto acks = run_and_kill(path, 600, 3);
    acknowledged.insert(acknowledged.end(), acks.begin(), acks.end());
    verify(path, acknowledged);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(acknowledged.size(), 100u) << "the writers should have made progress";
}

}  // namespace
}  // namespace sourced::testing
