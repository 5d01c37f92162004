// Two processes sharing a partitioned projection's partitions (partition_worker), one SIGKILLed while
// events keep coming: the survivor takes the dead one's partitions over within seconds, and the model
// equals a single clean pass (nothing applied twice, nothing skipped). SQLite and PostgreSQL models.

#include <csignal>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include "projections/harness.hpp"

extern char** environ;

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

// A partition_worker whose standard output goes to a file of the test's.
class Worker {
 public:
  Worker(const std::string& events, const std::string& kind, const std::string& models, int parts, int delay_us,
         std::string out)
      : out_(std::move(out)) {
    std::vector<std::string> args = {PARTITION_WORKER,        events, kind, models, std::to_string(parts),
                                     std::to_string(delay_us)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (posix_spawn(&pid_, PARTITION_WORKER, &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Worker() {
    if (pid_ > 0) kill_now();
  }
  bool kill_now() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }
  std::string output() const {
    std::ifstream in(out_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // The partitions it holds now, from its take/drop lines.
  std::set<int> holding() const {
    std::set<int> held;
    std::istringstream in(output());
    std::string what;
    int p = 0;
    while (in >> what) {
      if (what == "take" && in >> p) held.insert(p);
      if (what == "drop" && in >> p) held.erase(p);
    }
    return held;
  }
  bool took_any() const { return output().find("take") != std::string::npos; }
  bool started() const { return output().find("started") != std::string::npos; }

 private:
  std::string out_;
  pid_t pid_ = -1;
};

template <class H>
class PartitionCrash : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = h_.skip_reason()) GTEST_SKIP() << *why;
  }
  std::string kind() const { return std::is_same_v<typename H::Store, SqliteProjectionStore> ? "sqlite" : "postgres"; }
  H h_;
  TempDir dir_;
};

TYPED_TEST_SUITE(PartitionCrash, SqlModelStores, ModelStoreNames);

TYPED_TEST(PartitionCrash, TwoProcessesShareThePartitionsAndTheSurvivorOfASigkillFinishesTheCleanPass) {
  std::mt19937_64 rng(std::random_device{}());
  const int kParts = 4;
  auto& h = this->h_;
  // The tables exist before the workers start (each also creates them).
  Worker a(h.events_location(), this->kind(), h.models_location(), kParts, 300, (this->dir_.path() / "a").string());
  Worker b(h.events_location(), this->kind(), h.models_location(), kParts, 300, (this->dir_.path() / "b").string());
  for (int i = 0; i < 500 && !(a.started() && b.started()); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(a.started() && b.started()) << a.output() << b.output();

  Worker* victim = nullptr;
  Worker* survivor = nullptr;
  std::set<int> victims_partitions;
  auto killed_at = std::chrono::steady_clock::now();
  for (int round = 0; round < 60; ++round) {
    for (int i = 0; i < 4; ++i) {
      std::vector<EventData> batch(5, event("E"));
      h.events().append("c-" + std::to_string(rng() % 41), ExpectedVersion::any(), batch);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 20));
    if (round == 30) {
      // Both must work partitions before one is killed; on a loaded machine the second process can take
      // its first one late (it waits its fairness turn), so appends go on until it has, for up to 20 s.
      for (auto until = std::chrono::steady_clock::now() + 20s;
           !(a.took_any() && b.took_any()) && std::chrono::steady_clock::now() < until;) {
        h.events().append("c-" + std::to_string(rng() % 41), ExpectedVersion::any(), {event("E")});
        std::this_thread::sleep_for(20ms);
      }
      EXPECT_TRUE(a.took_any() && b.took_any()) << "both processes work partitions\nA:\n"
                                                << a.output() << "B:\n"
                                                << b.output();
      victim = a.holding().empty() ? &b : &a;
      survivor = victim == &a ? &b : &a;
      victims_partitions = victim->holding();
      ASSERT_TRUE(victim->kill_now()) << "the victim ended by itself: " << victim->output();
      killed_at = std::chrono::steady_clock::now();
    }
  }
  ASSERT_TRUE(victim);
  auto clean = fold(h.events());
  Model model;
  for (int i = 0; i < 600; ++i) {
    model = h.model("counts");
    if (model == clean) break;
    std::this_thread::sleep_for(50ms);
  }
  auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_EQ(model, clean) << "survivor:\n" << survivor->output();
  EXPECT_LT(took, 15.0) << "the survivor finished the dead process's partitions";
  for (int p : victims_partitions) {
    EXPECT_TRUE(survivor->holding().count(p) ||
                survivor->output().find("take " + std::to_string(p)) != std::string::npos)
        << "partition " << p << " taken over; survivor:\n"
        << survivor->output();
  }
  std::printf("victim held %zu partition(s); model complete %.2f s after the kill\n", victims_partitions.size(), took);
}

}  // namespace
}  // namespace sourced::testing
