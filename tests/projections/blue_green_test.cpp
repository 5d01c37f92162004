// Blue/green projection versions on every read-model store: a new version builds beside the old one,
// which keeps following and serving reads; the switch is atomic for a reader querying throughout; the
// old version is retired and its tables dropped.

#include "sourced/blue_green.hpp"

#include <atomic>
#include <functional>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "projections/blue_green_model.hpp"
#include "projections/harness.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

BlueGreenOptions options(int batch_events = 10000) {
  BlueGreenOptions o;
  o.tables = {"counts"};
  o.runner.progress = ProgressDisplay::none;
  o.runner.log = [](std::string_view) {};
  o.runner.batch_events = static_cast<std::size_t>(batch_events);
  o.runner.batch_interval = 20ms;
  o.poll = 10ms;
  return o;
}

// The same, with every version run as a PartitionedProjectionRunner of 4 partitions.
BlueGreenOptions partitioned(int batch_events = 10000) {
  BlueGreenOptions o = options(batch_events);
  PartitionedRunnerOptions p;
  p.partitions = 4;
  p.progress = ProgressDisplay::none;
  p.log = [](std::string_view) {};
  p.batch_events = static_cast<std::size_t>(batch_events);
  p.batch_interval = 20ms;
  p.retry_initial = 5ms;
  p.takeover_interval = 100ms;
  o.partitioned = p;
  return o;
}

// Stops and joins a test's threads when its scope ends, also after a failed ASSERT (an early return).
// Declared after what the threads use, so it goes first.
struct StopThreads {
  std::atomic<bool>& stop;
  std::vector<std::jthread*> threads;
  ~StopThreads() {
    stop = true;
    for (auto* t : threads) {
      if (t->joinable()) t->join();
    }
  }
};

// A reader querying the stable name `counts` throughout a switch, as an application's reads would, in a
// thread of its own: every answer must be one whole version (1 or 2), show at least `floor` events (what
// the old version showed before the new one began: less is a half-built model) and never fewer than an
// earlier answer (the model going back). The first answer that breaks this ends it. Stopped and joined
// when it goes, also after a failed ASSERT.
class CountsReader {
 public:
  template <class Models>
  CountsReader(Models& models, long floor)
      : thread_([this, &models, floor](std::stop_token stop) {
          run(
              stop, [&models] { return read_counts(models); }, floor);
        }) {}

  bool failed() const { return failed_; }
  bool saw(long version) const { return version == 1 ? saw_v1_ : saw_v2_; }
  // Returns once it has read `n` more times, or failed.
  void read_on(int n) const {
    auto until = reads_.load() + n;
    while (reads_.load() < until && !failed_) std::this_thread::sleep_for(1ms);
  }
  // Stops it; what went wrong, "" when nothing did.
  std::string stop() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
    return bad_;
  }

 private:
  void run(std::stop_token stop, const std::function<CountsModel()>& read, long floor) {
    long seen = 0;
    while (!stop.stop_requested()) {
      try {
        auto [events, version] = events_and_version(read());
        if (version != 1 && version != 2) {
          bad_ = "a read saw version " + std::to_string(version);
        } else if (events < floor) {
          bad_ = "version " + std::to_string(version) + " read half-built: " + std::to_string(events) + " events";
        } else if (events < seen) {
          bad_ = "version " + std::to_string(version) + " showed " + std::to_string(events) + " events after " +
                 std::to_string(seen) + " were shown";
        }
        seen = std::max(seen, events);
        (version == 1 ? saw_v1_ : saw_v2_) = true;
        ++reads_;
      } catch (const std::exception& e) {
        bad_ = std::string("a read failed: ") + e.what();
      }
      if (!bad_.empty()) {
        failed_ = true;
        return;
      }
    }
  }

  std::atomic<bool> failed_{false}, saw_v1_{false}, saw_v2_{false};
  std::atomic<int> reads_{0};
  std::string bad_;      // written by the thread only, read once it has ended
  std::jthread thread_;  // last: started once the rest is there
};

template <class H>
class BlueGreen : public ::testing::Test {
 protected:
  using Tx = typename H::Tx;
  void SetUp() override {
    if (auto why = h_.skip_reason()) GTEST_SKIP() << *why;
  }
  Position append(int n) {
    Position last;
    for (int i = 0; i < n; i += 10) {
      std::vector<EventData> batch(10, event("E"));
      last = h_.events().append("c-" + std::to_string(next_++ % 23), ExpectedVersion::any(), batch).last_position;
    }
    return last;
  }
  // The fold of the log as the counts model of `version`.
  CountsModel expected(long version) {
    CountsModel m;
    for (const auto& e : h_.events().read_all({})) {
      auto& row = m[e.stream];
      row = {version, row.second + 1};
    }
    return m;
  }
  // True when table `t` exists in the read-model database (a read of it works).
  bool table_exists(const std::string& t) {
    if constexpr (std::is_same_v<typename H::Store, MemoryProjectionStore>) {
      return !h_.models().table(t).empty();
    } else {
      try {
        h_.models().query("SELECT 1 FROM " + t, {}, [](const SqlRow&) {});
        return true;
      } catch (const std::exception&) {
        return false;
      }
    }
  }
  // The state rows of `version` of the counts projection.
  std::vector<ProjectionState> rows_of(std::uint32_t version) {
    std::vector<ProjectionState> out;
    for (auto& s : h_.models().list_states()) {
      if (s.key.name == "counts" && s.key.version == version) out.push_back(s);
    }
    return out;
  }
  // Where a test of a second version starts: `events` events, and version 1 built and switched in by a
  // runner (with options `o`) that has stopped since. False when the switch did not happen.
  [[nodiscard]] bool version_1_switched_in(int events, BlueGreenOptions o) {
    append(events);
    BlueGreenRunner v1(h_.events(), h_.models(), {counts_version<Tx>(1)}, std::move(o));
    return v1.wait_until_switched(60s);
  }
  // Every state row of `version` is retired, or with `retired` false none is; `partitions` rows when given.
  void expect_rows(std::uint32_t version, bool retired, std::optional<std::size_t> partitions = std::nullopt) {
    auto rows = rows_of(version);
    if (partitions) EXPECT_EQ(rows.size(), *partitions) << "state rows of version " << version;
    for (const auto& row : rows) {
      EXPECT_EQ(row.status == ProjectionStatus::retired, retired)
          << "version " << version << " partition '" << row.key.partition << "'";
    }
  }
  // The old version's tables are dropped in a transaction after the switch's: true once `t` has gone.
  bool dropped_within_10s(const std::string& t) {
    auto until = std::chrono::steady_clock::now() + 10s;
    while (table_exists(t) && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
    return !table_exists(t);
  }
  // Once `runner` has reached `pos` (default: the head), readers see the log as `version` folds it.
  void expect_shows_the_log(const BlueGreenRunner& runner, long version, std::optional<Position> pos = std::nullopt) {
    ASSERT_EQ(runner.wait_for(pos ? *pos : h_.events().head_position(), 10s), WaitResult::reached);
    EXPECT_EQ(read_counts(h_.models()), expected(version));
  }
  H h_;
  int next_ = 0;
};

TYPED_TEST_SUITE(BlueGreen, AllModelStores, ModelStoreNames);

TYPED_TEST(BlueGreen, TheFirstVersionIsShownOnceCaughtUp) {
  using Tx = typename TestFixture::Tx;
  this->append(500);
  BlueGreenRunner runner(this->h_.events(), this->h_.models(), {counts_version<Tx>(1)}, options(50));
  ASSERT_TRUE(runner.wait_until_switched(60s));
  EXPECT_EQ(runner.active_version(), 1u);
  EXPECT_EQ(this->h_.models().active_version("counts"), 1u);
  EXPECT_EQ(read_counts(this->h_.models()), this->expected(1));
  // It follows, and wait_for reads through the stable name.
  this->expect_shows_the_log(runner, 1, this->append(20));
}

TYPED_TEST(BlueGreen, ANewVersionBuildsBesideTheOldOneAndASwitchNeverShowsAHalfBuiltModel) {
  using Tx = typename TestFixture::Tx;
  auto& models = this->h_.models();
  ASSERT_TRUE(this->version_1_switched_in(2000, options()));
  const long before = events_and_version(read_counts(models)).first;
  ASSERT_EQ(before, 2000);

  // Every answer is one whole version, at least as far as the log was when the new version started.
  CountsReader reader(models, before);

  // Version 2 builds slowly, committing every 50 events into counts_v2.
  BlueGreenRunner v2(this->h_.events(), models, {counts_version<Tx>(1), counts_version<Tx>(2, 300)}, options(50));
  EXPECT_EQ(v2.target_version(), 2u);
  // Meanwhile version 1 follows and serves: new events show in it, read through the stable name.
  auto pos = this->append(30);
  ASSERT_EQ(v2.wait_for(pos, 10s), WaitResult::reached);
  auto during = read_counts(models);
  EXPECT_EQ(during, this->expected(1));
  // Version 2 has committed part of its model, which nobody reads through the stable name.
  auto until = std::chrono::steady_clock::now() + 10s;
  std::optional<ProjectionState> building;
  while (std::chrono::steady_clock::now() < until) {
    building = models.load_state({"counts", 2, ""});
    if (building && building->checkpoint.value() > 0) break;
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(building);
  EXPECT_LT(building->checkpoint, pos) << "version 2 was built before the test could look";
  EXPECT_EQ(v2.active_version(), 1u) << "version 2 was switched in before it could have caught up";
  EXPECT_TRUE(this->table_exists("counts_v2"));
  EXPECT_EQ(events_and_version(read_counts(models)), std::make_pair(2030L, 1L));

  ASSERT_TRUE(v2.wait_until_switched(60s));
  reader.read_on(20);
  EXPECT_EQ(reader.stop(), "");
  EXPECT_TRUE(reader.saw(1));
  EXPECT_TRUE(reader.saw(2));

  EXPECT_EQ(models.active_version("counts"), 2u);
  EXPECT_EQ(read_counts(models), this->expected(2));
  this->expect_rows(1, true, 1);
  EXPECT_TRUE(this->dropped_within_10s("counts_v1"));
  // Version 2 follows after the switch.
  this->expect_shows_the_log(v2, 2, this->append(10));
}

// Appends go on while the new version catches up and is switched in: the old version follows them up to
// the switch, so the new one must have reached everything the old one showed before it is shown. A reader
// querying throughout never sees the model go back. Once the new version is live, the writer appends in
// bursts (the switch window: the head is read, the target waits for it, the old one stops): the old
// version, fast, commits far past the head the switch read while the new one, slow, is still on its way,
// so a switch that did not wait for the old version's last checkpoint shows less on every store.
TYPED_TEST(BlueGreen, UnderAppendsTheSwitchNeverShowsLessThanTheOldVersionShowed) {
  using Tx = typename TestFixture::Tx;
  auto& models = this->h_.models();
  ASSERT_TRUE(this->version_1_switched_in(1000, options()));
  std::atomic<bool> stop{false};
  std::atomic<const BlueGreenRunner*> target{nullptr};
  std::atomic<int> burst_appends{0};
  CountsReader reader(models, 1000);
  std::jthread writer([&] {
    for (int i = 0; !stop && !reader.failed(); ++i) {
      auto* t = target.load();
      bool burst = t && !t->wait_until_switched(0ms) && t->progress().live && burst_appends < 400;
      std::vector<EventData> batch(burst ? 10 : 2, event("E"));
      this->h_.events().append("w-" + std::to_string(i % 7), ExpectedVersion::any(), batch);
      if (burst) {
        ++burst_appends;
      } else {
        std::this_thread::sleep_for(1ms);
      }
    }
  });
  // Old and new follow the same appends: the old one commits every 20 ms (or when idle), the new one at
  // its own pace (300 us per event). Batches are large so that in the SQL stores the old version is not
  // held to the new one's pace by per-batch commits (fsync): it runs ahead in the bursts.
  auto o = options(1000);
  BlueGreenRunner v2(this->h_.events(), models, {counts_version<Tx>(1), counts_version<Tx>(2, 300)}, o);
  StopThreads guard{stop, {&writer}};
  target = &v2;
  ASSERT_TRUE(v2.wait_until_switched(60s));
  std::this_thread::sleep_for(100ms);
  stop = true;
  writer.join();
  EXPECT_EQ(reader.stop(), "");
  EXPECT_GT(burst_appends.load(), 0) << "the writer never saw the new version live";
  this->expect_shows_the_log(v2, 2);
}

// Another process still runs the old version with a plain runner when the switch retires it: its next
// commit must not bring the row back (the fence refuses a retired row in the same statement), and it stops.
TYPED_TEST(BlueGreen, AnOldVersionsRunnerElsewhereNeverCommitsOverItsRetiredRow) {
  using Tx = typename TestFixture::Tx;
  auto& models = this->h_.models();
  ASSERT_TRUE(this->version_1_switched_in(200, options()));
  auto o = options();
  ProjectionRunner elsewhere(this->h_.events(), models, counts_version<Tx>(1), o.runner);
  ASSERT_EQ(elsewhere.wait_for(this->h_.events().head_position(), 10s), WaitResult::reached);
  BlueGreenRunner v2(this->h_.events(), models, {counts_version<Tx>(1), counts_version<Tx>(2)}, o);
  ASSERT_TRUE(v2.wait_until_switched(60s));
  auto retired = models.load_state({"counts", 1, ""});
  ASSERT_TRUE(retired);
  ASSERT_EQ(retired->status, ProjectionStatus::retired);
  // The old runner elsewhere applies these and tries to commit them over the retired row.
  this->append(20);
  EXPECT_TRUE(elsewhere.wait_until_stopped(10s)) << "the old version's runner went on after it was retired";
  EXPECT_EQ(elsewhere.progress().status, ProjectionStatus::retired);
  auto row = models.load_state({"counts", 1, ""});
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, ProjectionStatus::retired) << "checkpoint " << row->checkpoint.value();
  EXPECT_EQ(row->checkpoint, retired->checkpoint);
  this->expect_shows_the_log(v2, 2);
}

// A partitioned projection's new version builds in partitions beside the old one, under appends, with a
// reader querying throughout: every answer is one whole version, never less than the old one showed before
// the build began nor less than an earlier answer; after the switch every partition row of the old version
// is retired and the new version's rows are not.
TYPED_TEST(BlueGreen, APartitionedVersionSwitchesWholeAndRetiresEveryOldPartition) {
  using Tx = typename TestFixture::Tx;
  auto& models = this->h_.models();
  ASSERT_TRUE(this->version_1_switched_in(1000, partitioned()));
  ASSERT_EQ(this->rows_of(1).size(), 4u);
  const long before = events_and_version(read_counts(models)).first;
  ASSERT_EQ(before, 1000);

  std::atomic<bool> stop{false};
  CountsReader reader(models, before);
  std::jthread writer([&] {
    for (int i = 0; !stop && !reader.failed(); ++i) {
      this->h_.events().append("w-" + std::to_string(i % 11), ExpectedVersion::any(), {event("E"), event("E")});
      std::this_thread::sleep_for(1ms);
    }
  });

  BlueGreenRunner v2(this->h_.events(), models, {counts_version<Tx>(1), counts_version<Tx>(2, 200)}, partitioned(25));
  StopThreads guard{stop, {&writer}};
  ASSERT_TRUE(v2.wait_until_switched(60s));
  reader.read_on(20);
  stop = true;
  writer.join();
  EXPECT_EQ(reader.stop(), "");
  EXPECT_TRUE(reader.saw(1));
  EXPECT_TRUE(reader.saw(2));

  EXPECT_EQ(models.active_version("counts"), 2u);
  this->expect_rows(1, true, 4);
  this->expect_shows_the_log(v2, 2);
  this->expect_rows(2, false, 4);
  EXPECT_TRUE(this->dropped_within_10s("counts_v1"));
}

// Another process (here: another runner on the same read-model store, sharing the partitions' leases) runs
// only the old partitioned version. When the new version is switched in, it notices and stops, and the old
// partition rows stay retired whatever its workers had in hand.
TYPED_TEST(BlueGreen, AProcessRunningTheOldPartitionedVersionNoticesTheSwitchAndStops) {
  using Tx = typename TestFixture::Tx;
  auto& models = this->h_.models();
  this->append(300);
  BlueGreenRunner elsewhere(this->h_.events(), models, {counts_version<Tx>(1)}, partitioned());
  ASSERT_TRUE(elsewhere.wait_until_switched(60s));
  BlueGreenRunner v2(this->h_.events(), models, {counts_version<Tx>(1), counts_version<Tx>(2)}, partitioned());
  ASSERT_TRUE(v2.wait_until_switched(60s));
  this->append(40);  // the old version's workers elsewhere apply these; their commits are refused
  auto until = std::chrono::steady_clock::now() + 10s;
  while (elsewhere.active_version() != 2u && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(elsewhere.active_version(), 2u) << "the process running version 1 did not notice the switch";
  EXPECT_EQ(elsewhere.progress().status, ProjectionStatus::stopped);
  std::this_thread::sleep_for(200ms);
  this->expect_rows(1, true);
  this->expect_shows_the_log(v2, 2);
}
TYPED_TEST(BlueGreen, ARestartRunsTheActiveVersionAndAnOlderTargetIsRefused) {
  using Tx = typename TestFixture::Tx;
  this->append(100);
  {
    BlueGreenRunner r(this->h_.events(), this->h_.models(), {counts_version<Tx>(1), counts_version<Tx>(2)}, options());
    ASSERT_TRUE(r.wait_until_switched(60s));
  }
  auto pos = this->append(10);
  {
    BlueGreenRunner r(this->h_.events(), this->h_.models(), {counts_version<Tx>(2)}, options());
    EXPECT_TRUE(r.wait_until_switched(0ms));
    EXPECT_EQ(r.wait_for(pos, 10s), WaitResult::reached);
  }
  EXPECT_EQ(read_counts(this->h_.models()), this->expected(2));
  try {
    BlueGreenRunner r(this->h_.events(), this->h_.models(), {counts_version<Tx>(1)}, options());
    FAIL() << "an older version than the active one ran";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("version 2 is active"), std::string::npos) << e.what();
  }
  EXPECT_THROW(BlueGreenRunner(this->h_.events(), this->h_.models(), std::vector<Projection<Tx>>{}, options()),
               InvalidArgument);
  EXPECT_THROW(BlueGreenRunner(this->h_.events(), this->h_.models(), {counts_version<Tx>(3)}, BlueGreenOptions{}),
               InvalidArgument);
}

}  // namespace
}  // namespace sourced::testing
