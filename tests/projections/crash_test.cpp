// SIGKILL during a rebuild and during follow, on each SQL read-model store: a projection process
// (projection_worker) is killed at random moments, resumed (by another process, then in this one), and
// the model must equal one built in a single clean pass: nothing applied twice, nothing skipped.

#include <csignal>
#include <random>
#include <thread>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include "projections/blue_green_model.hpp"
#include "projections/harness.hpp"
#include "sourced/blue_green.hpp"

extern char** environ;

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

class Worker {
 public:
  Worker(const std::string& events, const std::string& kind, const std::string& models, const std::string& mode,
         int delay_us) {
    std::vector<std::string> args = {PROJECTION_WORKER, events, kind, models, mode, std::to_string(delay_us)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    if (posix_spawn(&pid_, PROJECTION_WORKER, &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Worker() {
    if (pid_ > 0) kill_now();
  }
  // SIGKILLs the worker; true when it was still running (not ended by itself).
  bool kill_now() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

ProjectionRunnerOptions quiet(ProjectionRunnerOptions o = {}) {
  o.progress = ProgressDisplay::none;
  o.log = [](std::string_view) {};
  return o;
}

template <class H>
class ProjectionCrash : public ::testing::Test {
 public:  // for the test bodies shared by several tests (free functions)
  void SetUp() override {
    if (auto why = h_.skip_reason()) GTEST_SKIP() << *why;
  }
  void append(int n, std::mt19937_64& rng) {
    for (int i = 0; i < n; i += 10) {
      std::vector<EventData> batch(10, event("E"));
      h_.events().append("c-" + std::to_string(rng() % 37), ExpectedVersion::any(), batch);
    }
  }
  std::string kind() const { return std::is_same_v<typename H::Store, SqliteProjectionStore> ? "sqlite" : "postgres"; }
  std::uint64_t checkpoint() {
    auto s = h_.models().load_state({"counts", 1, ""});
    return s ? s->checkpoint.value() : 0;
  }
  // Resumes in this process up to the head, and compares with a clean pass and with the fold.
  void finish_and_compare() {
    ProjectionRunner resume(h_.events(), h_.models(), h_.projection("counts"), quiet({.stop_when_caught_up = true}));
    ASSERT_TRUE(resume.wait_until_stopped(120s));
    ASSERT_FALSE(resume.error());
    ProjectionRunner clean(h_.events(), h_.models(), h_.projection("clean"),
                           quiet({.start = StartMode::rebuild, .stop_when_caught_up = true}));
    ASSERT_TRUE(clean.wait_until_stopped(120s));
    auto model = h_.model("counts");
    EXPECT_EQ(model, h_.model("clean"));
    EXPECT_EQ(model, fold(h_.events()));
  }
  H h_;
};

TYPED_TEST_SUITE(ProjectionCrash, SqlModelStores, ModelStoreNames);

TYPED_TEST(ProjectionCrash, SigkillDuringARebuildThenResumeGivesTheCleanPassModel) {
  std::mt19937_64 rng(42);
  this->append(3000, rng);
  const auto head = this->h_.events().head_position().value();
  int killed_midway = 0;
  for (int round = 0; round < 4; ++round) {
    Worker w(this->h_.events_location(), this->kind(), this->h_.models_location(), round == 0 ? "rebuild" : "resume",
             100);
    ASSERT_TRUE(w.started());
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 200));
    EXPECT_TRUE(w.kill_now()) << "the worker ended by itself";
    auto c = this->checkpoint();
    if (c > 0 && c < head) ++killed_midway;
  }
  EXPECT_GE(killed_midway, 1) << "no kill landed in the middle of the rebuild";
  this->finish_and_compare();
}

TYPED_TEST(ProjectionCrash, SigkillDuringFollowThenResumeGivesTheCleanPassModel) {
  std::mt19937_64 rng(7);
  this->append(200, rng);
  for (int round = 0; round < 4; ++round) {
    Worker w(this->h_.events_location(), this->kind(), this->h_.models_location(), "resume", 200);
    ASSERT_TRUE(w.started());
    // Appends until the worker has committed past where this round began (a kill before its first commit
    // tests nothing: on a loaded machine a timer alone can elapse before the worker's first batch)...
    auto began = this->checkpoint();
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (this->checkpoint() <= began) {
      ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "the worker committed nothing in round " << round;
      this->append(10, rng);
      std::this_thread::sleep_for(2ms);
    }
    // ...then appends while the worker follows, and a kill at a random moment.
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100 + rng() % 300);
    while (std::chrono::steady_clock::now() < until) {
      this->append(10, rng);
      std::this_thread::sleep_for(2ms);
    }
    EXPECT_TRUE(w.kill_now()) << "the worker ended by itself";
  }
  EXPECT_GT(this->checkpoint(), 200u) << "the worker followed";
  this->finish_and_compare();
}

// Blue/green: SIGKILL while version 2 builds beside version 1 (whole, or in 4 partitions). Until the
// switch, readers of the stable name see version 1 whole; a restarted process resumes version 2 from its
// checkpoints and switches it in, retiring every state row of version 1.
template <class H>
void sigkill_while_a_new_version_builds(ProjectionCrash<H>& t, bool partitioned) {
  using Tx = typename H::Tx;
  auto& models = t.h_.models();
  std::mt19937_64 rng(99);
  t.append(3000, rng);
  const auto head = t.h_.events().head_position();
  const std::string prefix = partitioned ? "partitioned_" : "";
  auto whole = [&](long version) {
    CountsModel m;
    for (const auto& e : t.h_.events().read_all({})) {
      auto& row = m[e.stream];
      row = {version, row.second + 1};
    }
    return m;
  };
  auto rows_of = [&](std::uint32_t version) {
    std::vector<ProjectionState> out;
    for (auto& s : models.list_states()) {
      if (s.key.name == "counts" && s.key.version == version) out.push_back(s);
    }
    return out;
  };
  // How far version 2 is built: its checkpoint, or its least partition checkpoint (0 before every
  // partition has a row).
  auto built = [&]() -> std::uint64_t {
    auto rows = rows_of(2);
    if (rows.size() < (partitioned ? 4u : 1u)) return 0;
    std::uint64_t least = kUnlimited;
    for (auto& r : rows) least = std::min(least, r.checkpoint.value());
    return least;
  };
  {
    // Version 1 built and switched in by a worker, which is then killed while it follows.
    Worker w(t.h_.events_location(), t.kind(), t.h_.models_location(), prefix + "blue_green_1", 0);
    ASSERT_TRUE(w.started());
    auto until = std::chrono::steady_clock::now() + 60s;
    while (models.active_version("counts") != 1u && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(models.active_version("counts"), 1u);
    EXPECT_TRUE(w.kill_now());
  }
  // Each round kills the worker once version 2 has committed a few hundred more positions (watched, not
  // timed: a fast or a loaded machine kills it mid-build alike), so three rounds never finish the build.
  int killed_midway = 0;
  std::uint64_t before = 0;
  for (int round = 0; round < 3; ++round) {
    Worker w(t.h_.events_location(), t.kind(), t.h_.models_location(), prefix + "blue_green_2", 150);
    ASSERT_TRUE(w.started());
    const std::uint64_t kill_at = before + 200 + rng() % 200;
    auto until = std::chrono::steady_clock::now() + 60s;
    while (built() < kill_at) {
      ASSERT_LT(std::chrono::steady_clock::now(), until) << "version 2 made no progress in round " << round;
      std::this_thread::sleep_for(1ms);
    }
    EXPECT_TRUE(w.kill_now()) << "the worker ended by itself";
    auto now_built = built();
    if (now_built > before && now_built < head.value()) ++killed_midway;
    before = now_built;
    // Not switched: readers still see version 1, whole.
    EXPECT_EQ(models.active_version("counts"), 1u);
    EXPECT_EQ(read_counts(models), whole(1)) << "round " << round;
  }
  EXPECT_GE(killed_midway, 1) << "no kill landed in the middle of version 2's build";
  BlueGreenOptions o{.tables = {"counts"}};
  o.runner.progress = ProgressDisplay::none;
  o.runner.log = [](std::string_view) {};
  if (partitioned) {
    PartitionedRunnerOptions p;
    p.partitions = 4;
    p.progress = ProgressDisplay::none;
    p.log = [](std::string_view) {};
    p.takeover_interval = 100ms;
    o.partitioned = p;
  }
  BlueGreenRunner resume(t.h_.events(), models, {counts_version<Tx>(1), counts_version<Tx>(2)}, o);
  ASSERT_TRUE(resume.wait_until_switched(120s));
  EXPECT_EQ(models.active_version("counts"), 2u);
  EXPECT_EQ(read_counts(models), whole(2));
  auto old = rows_of(1);
  EXPECT_EQ(old.size(), partitioned ? 4u : 1u);
  for (const auto& row : old) EXPECT_EQ(row.status, ProjectionStatus::retired) << "partition " << row.key.partition;
}

TYPED_TEST(ProjectionCrash, SigkillWhileANewVersionBuildsThenResumeAndSwitch) {
  sigkill_while_a_new_version_builds(*this, false);
}

TYPED_TEST(ProjectionCrash, SigkillWhileANewPartitionedVersionBuildsThenResumeAndSwitch) {
  sigkill_while_a_new_version_builds(*this, true);
}

}  // namespace
}  // namespace sourced::testing
