// GroupCommit on its own: a fake engine that records the groups it is given stands in for SQLite and
// PostgreSQL (it is a unit of the component, not a database mock). A gate holds the writer inside a group
// so the tests decide exactly what is queued behind it.

#include "store/group_commit.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sourced/error.hpp"

namespace sourced::detail {
namespace {

using namespace std::chrono_literals;

struct TestRequest : GroupCommit::Request {
  TestRequest(int id, std::size_t events = 1, std::size_t bytes = 0) : Request(events, bytes), id(id) {}
  int id;
  int result = 0;
};

int id_of(const GroupCommit::Request* r) { return static_cast<const TestRequest*>(r)->id; }

class FakeEngine final : public GroupCommit::Engine {
 public:
  // Hooks a test may set; each runs on the writer thread.
  std::function<bool(const TestRequest&, bool)> admit_hook;
  std::function<GroupCommit::Request*(std::span<GroupCommit::Request* const>)> run_hook;

  bool admit(const GroupCommit::Request& r, bool first) override {
    return admit_hook ? admit_hook(static_cast<const TestRequest&>(r), first) : true;
  }

  GroupCommit::Request* run(std::span<GroupCommit::Request* const> group) override {
    {
      std::unique_lock lock(mu_);
      std::vector<int> ids;
      for (auto* r : group) ids.push_back(id_of(r));
      runs_.push_back(ids);
      ++in_run_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !held_; });
    }
    if (run_hook) return run_hook(group);
    for (auto* r : group) static_cast<TestRequest*>(r)->result = id_of(r) * 10;
    return nullptr;
  }

  void committed(std::span<GroupCommit::Request* const> group) noexcept override {
    std::lock_guard lock(mu_);
    std::vector<int> ids;
    for (auto* r : group) ids.push_back(id_of(r));
    committed_.push_back(ids);
  }

  void hold() {
    std::lock_guard lock(mu_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard lock(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // Waits until the writer has entered `n` runs in all.
  void wait_runs(int n) {
    std::unique_lock lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, 10s, [&] { return in_run_ >= n; })) << "the writer never ran group " << n;
  }
  std::vector<std::vector<int>> runs() {
    std::lock_guard lock(mu_);
    return runs_;
  }
  std::vector<std::vector<int>> committed_groups() {
    std::lock_guard lock(mu_);
    return committed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  int in_run_ = 0;
  std::vector<std::vector<int>> runs_;
  std::vector<std::vector<int>> committed_;
};

// Waits until `n` requests are queued behind the running group.
void wait_queued(GroupCommit& gc, std::size_t n) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (gc.queued() < n) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "only " << gc.queued() << " of " << n << " queued";
    std::this_thread::sleep_for(1ms);
  }
}

// Submits requests from their own threads, one after another in queue order; join() collects outcomes.
class Submitters {
 public:
  explicit Submitters(GroupCommit& gc) : gc_(gc) {}
  ~Submitters() { join(); }

  // Queues request `id` and returns once it is queued (behind a held group).
  void queue(int id, std::size_t events = 1, std::size_t bytes = 0) {
    std::size_t before = gc_.queued();
    start(id, events, bytes);
    wait_queued(gc_, before + 1);
  }
  // Starts request `id` without waiting for it to be queued.
  void start(int id, std::size_t events = 1, std::size_t bytes = 0) {
    auto& slot = outcomes_.emplace_back();
    slot.id = id;
    threads_.emplace_back([this, &slot, events, bytes] {
      TestRequest r(slot.id, events, bytes);
      try {
        gc_.submit(r);
        slot.result = r.result;
      } catch (const std::exception& e) {
        slot.error = e.what();
      }
    });
  }
  void join() {
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  struct Outcome {
    int id = 0;
    int result = 0;
    std::string error;
  };
  std::list<Outcome>& outcomes() { return outcomes_; }

 private:
  GroupCommit& gc_;
  std::list<Outcome> outcomes_;
  std::vector<std::thread> threads_;
};

using Groups = std::vector<std::vector<int>>;

TEST(GroupCommit, RunsARequestAndReturnsItsResult) {
  FakeEngine engine;
  GroupCommit gc(engine, {});
  TestRequest r(7);
  gc.submit(r);
  EXPECT_EQ(r.result, 70);
  EXPECT_EQ(engine.runs(), Groups({{7}}));
  EXPECT_EQ(engine.committed_groups(), Groups({{7}}));
}

TEST(GroupCommit, AnIdleComponentRunsARequestOnItsCallersThreadAndQueuedOnesOnTheWriterThread) {
  // A lone writer pays no thread hand-off; what queues behind a running group goes to the writer thread.
  FakeEngine engine;
  std::mutex mu;
  std::map<int, std::thread::id> ran_on;
  engine.run_hook = [&](std::span<GroupCommit::Request* const> group) -> GroupCommit::Request* {
    std::lock_guard lock(mu);
    for (auto* r : group) ran_on[id_of(r)] = std::this_thread::get_id();
    return nullptr;
  };
  GroupCommit gc(engine, {});
  TestRequest alone(1);
  gc.submit(alone);
  EXPECT_EQ(ran_on.at(1), std::this_thread::get_id());
  Submitters s(gc);
  engine.hold();
  s.start(2);
  engine.wait_runs(2);
  s.queue(3);
  s.queue(4);
  engine.release();
  s.join();
  EXPECT_EQ(engine.runs(), Groups({{1}, {2}, {3, 4}}));
  EXPECT_NE(ran_on.at(3), ran_on.at(2));
  EXPECT_EQ(ran_on.at(3), ran_on.at(4));
  EXPECT_NE(ran_on.at(3), std::this_thread::get_id());
}

TEST(GroupCommit, RequestsQueuedDuringAGroupFormTheNextGroupInOrder) {
  FakeEngine engine;
  GroupCommit gc(engine, {});
  Submitters s(gc);
  engine.hold();
  s.start(1);
  engine.wait_runs(1);
  for (int id = 2; id <= 6; ++id) s.queue(id);
  engine.release();
  s.join();
  EXPECT_EQ(engine.runs(), Groups({{1}, {2, 3, 4, 5, 6}}));
  for (auto& o : s.outcomes()) {
    EXPECT_EQ(o.error, "") << o.id;
    EXPECT_EQ(o.result, o.id * 10);
  }
}

TEST(GroupCommit, LimitsEndAGroupWithoutSkippingAhead) {
  FakeEngine engine;
  GroupLimits limits;
  limits.max_events = 10;
  limits.max_appends = 3;
  limits.max_bytes = 100;
  GroupCommit gc(engine, limits);
  Submitters s(gc);
  engine.hold();
  s.start(0);
  engine.wait_runs(1);
  s.queue(1, 8);       // group: 1
  s.queue(2, 5);       // 8 + 5 > 10 events: new group 2, 3
  s.queue(3, 1);       //
  s.queue(4, 50, 10);  // over max_events alone: runs, alone
  s.queue(5, 1, 60);   // group 5, 6 by bytes (60 + 40 <= 100); 7 would pass 100 bytes
  s.queue(6, 1, 40);
  s.queue(7, 1, 1);  // group 7, 8, 9 by appends; 10 starts the next one
  s.queue(8, 1, 1);
  s.queue(9, 1, 1);
  s.queue(10, 1, 1);
  s.queue(11, 9, 1);  // a small one behind a large one is not taken ahead of it
  s.queue(12, 1, 1);
  engine.release();
  s.join();
  EXPECT_EQ(engine.runs(), Groups({{0}, {1}, {2, 3}, {4}, {5, 6}, {7, 8, 9}, {10, 11}, {12}}));
}

TEST(GroupCommit, AFailingRequestFailsAlone) {
  FakeEngine engine;
  engine.run_hook = [](std::span<GroupCommit::Request* const> group) -> GroupCommit::Request* {
    for (auto* r : group) {
      if (id_of(r) == 3) {
        r->error = std::make_exception_ptr(InvalidArgument("wrong expected version"));
      } else {
        static_cast<TestRequest*>(r)->result = id_of(r);
      }
    }
    return nullptr;
  };
  GroupCommit gc(engine, {});
  Submitters s(gc);
  engine.hold();
  s.start(1);
  engine.wait_runs(1);
  for (int id = 2; id <= 4; ++id) s.queue(id);
  engine.release();
  s.join();
  EXPECT_EQ(engine.runs(), Groups({{1}, {2, 3, 4}}));
  for (auto& o : s.outcomes()) {
    if (o.id == 3) {
      EXPECT_NE(o.error.find("expected"), std::string::npos) << o.error;
    } else {
      EXPECT_EQ(o.error, "") << o.id;
      EXPECT_EQ(o.result, o.id);
    }
  }
}

TEST(GroupCommit, ARequestThatBreaksItsGroupIsAnsweredAndTheRestRunAgainWithoutIt) {
  FakeEngine engine;
  std::atomic<int> attempts{0};
  engine.run_hook = [&](std::span<GroupCommit::Request* const> group) -> GroupCommit::Request* {
    ++attempts;
    for (auto* r : group) {
      // Request 3 breaks the group (partial writes to undo) after 2 ran; the errors set meanwhile are
      // cleared before the rerun.
      if (id_of(r) == 2) r->error = std::make_exception_ptr(std::runtime_error("stale error"));
      if (id_of(r) == 3) {
        r->error = std::make_exception_ptr(StorageError("disk I/O error"));
        return r;
      }
    }
    for (auto* r : group) {
      r->error = nullptr;
      static_cast<TestRequest*>(r)->result = id_of(r) + 100;
    }
    return nullptr;
  };
  GroupCommit gc(engine, {});
  Submitters s(gc);
  engine.hold();
  s.start(1);
  engine.wait_runs(1);
  for (int id = 2; id <= 4; ++id) s.queue(id);
  engine.release();
  s.join();
  EXPECT_EQ(engine.runs(), Groups({{1}, {2, 3, 4}, {2, 4}}));
  EXPECT_EQ(engine.committed_groups(), Groups({{1}, {2, 4}}));
  for (auto& o : s.outcomes()) {
    if (o.id == 3) {
      EXPECT_EQ(o.error, "disk I/O error");
    } else {
      EXPECT_EQ(o.error, "") << o.id;
      EXPECT_EQ(o.result, o.id + 100);
    }
  }
}

TEST(GroupCommit, AnExceptionFromTheEngineFailsItsGroupAndTheWriterGoesOn) {
  FakeEngine engine;
  engine.run_hook = [&](std::span<GroupCommit::Request* const> group) -> GroupCommit::Request* {
    if (id_of(group[0]) == 2) {
      group[1]->error = std::make_exception_ptr(StreamNotFound("s"));  // kept: set before the throw
      throw std::bad_alloc();
    }
    for (auto* r : group) static_cast<TestRequest*>(r)->result = 1;
    return nullptr;
  };
  GroupCommit gc(engine, {});
  Submitters s(gc);
  engine.hold();
  s.start(1);
  engine.wait_runs(1);
  s.queue(2);
  s.queue(3);
  s.queue(4);
  engine.release();
  s.join();
  for (auto& o : s.outcomes()) {
    if (o.id == 1) EXPECT_EQ(o.error, "");
    if (o.id == 2 || o.id == 4) EXPECT_EQ(o.error, "std::bad_alloc") << o.id;
    if (o.id == 3) EXPECT_NE(o.error.find("not found"), std::string::npos) << o.error;
  }
  TestRequest after(9);
  gc.submit(after);
  EXPECT_EQ(after.result, 1);
}

TEST(GroupCommit, AdmitSplitsGroupsAndAThrowingAdmitFailsOnlyTheFirstRequest) {
  FakeEngine engine;
  // Like PostgreSQL's rule: two requests with the same key (id % 10) never share a group; key 9 cannot
  // be admitted at all (an allocation failure, say).
  std::set<int> keys;
  engine.admit_hook = [&](const TestRequest& r, bool first) {
    if (first) keys.clear();
    if (r.id % 10 == 9) throw std::bad_alloc();
    return keys.insert(r.id % 10).second;
  };
  GroupCommit gc(engine, {});
  Submitters s(gc);
  engine.hold();
  s.start(100);
  engine.wait_runs(1);
  for (int id : {1, 2, 11, 3, 9, 19, 4}) s.queue(id);
  engine.release();
  s.join();
  // 11 clashes with 1; 9 ends the group it would join, then fails alone when first; so does 19.
  EXPECT_EQ(engine.runs(), Groups({{100}, {1, 2}, {11, 3}, {4}}));
  for (auto& o : s.outcomes()) {
    if (o.id % 10 == 9) {
      EXPECT_EQ(o.error, "std::bad_alloc") << o.id;
    } else {
      EXPECT_EQ(o.error, "") << o.id;
    }
  }
}

TEST(GroupCommit, StopRunsWhatIsQueuedThenRefusesNewRequests) {
  FakeEngine engine;
  auto gc = std::make_unique<GroupCommit>(engine, GroupLimits{});
  Submitters s(*gc);
  engine.hold();
  s.start(1);
  engine.wait_runs(1);
  for (int id = 2; id <= 5; ++id) s.queue(id);
  std::thread stopper([&] { gc->stop(); });
  // stop() must not return while requests wait: give it the chance to, then let the groups run.
  std::this_thread::sleep_for(20ms);
  engine.release();
  stopper.join();
  s.join();
  for (auto& o : s.outcomes()) {
    EXPECT_EQ(o.error, "") << o.id;
    EXPECT_EQ(o.result, o.id * 10);
  }
  EXPECT_EQ(engine.runs(), Groups({{1}, {2, 3, 4, 5}}));
  TestRequest late(6);
  EXPECT_THROW(gc->submit(late), StorageError);
  gc.reset();  // a second stop is harmless
}

TEST(GroupCommit, ManyThreadsEachGetTheirOwnResultAndEveryGroupIsCommittedOnce) {
  FakeEngine engine;
  GroupLimits limits;
  limits.max_appends = 7;
  GroupCommit gc(engine, limits);
  constexpr int kThreads = 32, kEach = 300;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  // The first group is held until requests of other threads have queued behind it: on loaded cores each
  // thread could otherwise run its whole loop within one time slice, every group holding one request.
  engine.hold();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        TestRequest r(t * kEach + i);
        gc.submit(r);
        if (r.result != r.id * 10) ++wrong;
      }
    });
  }
  wait_queued(gc, 8);
  engine.release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  auto runs = engine.runs();
  EXPECT_EQ(runs, engine.committed_groups());
  std::size_t total = 0;
  std::set<int> seen;
  for (auto& g : runs) {
    EXPECT_LE(g.size(), 7u);
    total += g.size();
    seen.insert(g.begin(), g.end());
  }
  EXPECT_EQ(total, std::size_t{kThreads * kEach});
  EXPECT_EQ(seen.size(), std::size_t{kThreads * kEach});
  EXPECT_LT(runs.size(), std::size_t{kThreads * kEach}) << "concurrent requests never shared a group";
}

}  // namespace
}  // namespace sourced::detail
