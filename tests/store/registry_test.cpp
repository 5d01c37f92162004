// The subscription registry's contract (sourced/subscription_registry.hpp), run against each engine in
// tests/store/engines.hpp: what a persistent subscription stores, how a consumer's progress changes it,
// and the one-consumer lease, within a process and across processes (lease_holder).

#include <atomic>
#include <csignal>
#include <cstdio>
#include <thread>

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sourced/subscription_registry.hpp"
#include "store/engines.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

class Registry : public ::testing::TestWithParam<EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    store_ = harness_->open();
  }
  SubscriptionRegistry& reg() { return store_->subscriptions(); }

  static PersistentSubscriptionConfig config(std::string name) {
    PersistentSubscriptionConfig c;
    c.name = std::move(name);
    return c;
  }
  static ParkedEvent parked_event(std::uint64_t key, std::string error = "boom") {
    ParkedEvent p;
    p.key = key;
    p.position = Position(key);
    p.stream = "account-" + std::to_string(key);
    p.version = StreamVersion(1);
    p.event_id = Uuid::v7();
    p.type = "Deposited";
    p.attempts = 3;
    p.error = std::move(error);
    return p;
  }
  static std::vector<std::uint64_t> keys(const std::vector<ParkedEvent>& ps) {
    std::vector<std::uint64_t> k;
    for (const auto& p : ps) k.push_back(p.key);
    return k;
  }

  std::unique_ptr<EngineHarness> harness_;
  std::unique_ptr<EventStore> store_;
};

using K = std::vector<std::uint64_t>;

TEST_P(Registry, CreateGetListRemove) {
  EXPECT_TRUE(reg().list().empty());
  EXPECT_FALSE(reg().get("orders").has_value());

  PersistentSubscriptionConfig all = config("orders");
  all.filter = EventFilter{.category = "order", .event_types = {"Placed", "Paid"}};
  all.start_after = 42;
  all.max_in_flight = 7;
  all.max_attempts = 3;
  reg().create(all);
  PersistentSubscriptionConfig one = config("audit.account-1");
  one.stream = "account-1";
  reg().create(one);
  PersistentSubscriptionConfig prefix = config("by-prefix");
  prefix.filter = EventFilter{.stream_prefix = "acc"};
  reg().create(prefix);

  auto got = reg().get("orders");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->config.name, "orders");
  EXPECT_EQ(got->config.stream, "");
  ASSERT_TRUE(got->config.filter.has_value());
  EXPECT_EQ(got->config.filter->category, std::optional<std::string>("order"));
  EXPECT_FALSE(got->config.filter->stream_prefix.has_value());
  EXPECT_EQ(got->config.filter->event_types, (std::vector<std::string>{"Placed", "Paid"}));
  EXPECT_EQ(got->config.start_after, 42u);
  EXPECT_EQ(got->config.max_in_flight, 7u);
  EXPECT_EQ(got->config.max_attempts, 3u);
  EXPECT_EQ(got->checkpoint, 42u) << "the first checkpoint is start_after";
  EXPECT_EQ(got->parked, 0u);
  EXPECT_EQ(got->in_flight, 0u);
  EXPECT_EQ(got->last_error, "");
  EXPECT_GT(got->created_at.time_since_epoch().count(), 0);
  EXPECT_EQ(got->created_at, got->updated_at);

  auto stream_sub = reg().get("audit.account-1");
  ASSERT_TRUE(stream_sub.has_value());
  EXPECT_EQ(stream_sub->config.stream, "account-1");
  EXPECT_FALSE(stream_sub->config.filter.has_value());
  EXPECT_EQ(reg().get("by-prefix")->config.filter->stream_prefix, std::optional<std::string>("acc"));
  EXPECT_TRUE(reg().get("by-prefix")->config.filter->event_types.empty());

  auto listed = reg().list();
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[0].config.name, "audit.account-1");
  EXPECT_EQ(listed[1].config.name, "by-prefix");
  EXPECT_EQ(listed[2].config.name, "orders");

  EXPECT_TRUE(reg().remove("orders"));
  EXPECT_FALSE(reg().remove("orders"));
  EXPECT_FALSE(reg().get("orders").has_value());
  EXPECT_EQ(reg().list().size(), 2u);
}

TEST_P(Registry, CreatingAnExistingNameFailsAndKeepsTheFirst) {
  PersistentSubscriptionConfig first = config("orders");
  first.max_in_flight = 5;
  reg().create(first);
  PersistentSubscriptionConfig second = config("orders");
  second.stream = "x";
  try {
    reg().create(second);
    FAIL() << "created twice";
  } catch (const SubscriptionExists& e) {
    EXPECT_EQ(e.name(), "orders");
    EXPECT_EQ(e.code(), ErrorCode::subscription_exists);
    EXPECT_FALSE(e.transient());
  }
  EXPECT_EQ(reg().get("orders")->config.max_in_flight, 5u);
  EXPECT_EQ(reg().get("orders")->config.stream, "");
}

TEST_P(Registry, BadNamesAndSettingsAreRefusedBeforeAnythingIsStored) {
  std::vector<std::string> bad_names = {"", std::string(201, 'a'), "a b", "a/b", "caf\xc3\xa9", "a\nb", "$all"};
  for (const auto& n : bad_names) {
    EXPECT_THROW(reg().create(config(n)), InvalidArgument) << n;
    EXPECT_THROW(reg().get(n), InvalidArgument) << n;
    EXPECT_THROW(reg().acquire(n, false, 0ms), InvalidArgument) << n;
  }
  EXPECT_NO_THROW(reg().create(config(std::string(200, 'a'))));
  EXPECT_NO_THROW(reg().create(config("Az09_.:@-")));

  auto bad = [&](PersistentSubscriptionConfig c, const std::string& why) {
    EXPECT_THROW(reg().create(c), InvalidArgument) << why;
  };
  auto c = config("bad");
  c.max_in_flight = 0;
  bad(c, "max_in_flight 0");
  c = config("bad");
  c.max_attempts = 0;
  bad(c, "max_attempts 0");
  c = config("bad");
  c.stream = "account-1";
  c.filter = EventFilter{.category = "account"};
  bad(c, "a filter on a stream");
  c = config("bad");
  c.filter = EventFilter{.category = "a-b"};
  bad(c, "a category with '-'");
  c = config("bad");
  c.filter = EventFilter{.category = "a", .stream_prefix = "b"};
  bad(c, "category and prefix");
  c = config("bad");
  c.stream = std::string(1001, 's');
  bad(c, "a stream id too long");
  EXPECT_FALSE(reg().get("bad").has_value());
  EXPECT_EQ(reg().list().size(), 2u);
}

TEST_P(Registry, TheCheckpointNeverMovesBack) {
  reg().create(config("s"));
  auto lease = reg().acquire("s", false, 0ms);  // in_flight is reported while a consumer holds it
  reg().save_progress("s", {.checkpoint = 10});
  EXPECT_EQ(reg().get("s")->checkpoint, 10u);
  reg().save_progress("s", {.checkpoint = 4, .in_flight = 3});
  EXPECT_EQ(reg().get("s")->checkpoint, 10u);
  EXPECT_EQ(reg().get("s")->in_flight, 3u) << "the rest of a report with an old checkpoint still applies";
  reg().save_progress("s", {.checkpoint = 11});
  EXPECT_EQ(reg().get("s")->checkpoint, 11u);
}

TEST_P(Registry, ProgressStoresParkedEventsCheckpointCountersAndErrorTogether) {
  reg().create(config("s"));
  auto lease = reg().acquire("s", false, 0ms);
  auto before = reg().get("s")->updated_at;
  std::this_thread::sleep_for(2ms);
  ParkedEvent p5 = parked_event(5, "handler said no");
  ParkedEvent p7 = parked_event(7);
  reg().save_progress("s",
                      {.checkpoint = 9, .newly_parked = {p5, p7}, .in_flight = 2, .last_error = "handler said no"});
  auto info = reg().get("s");
  EXPECT_EQ(info->checkpoint, 9u);
  EXPECT_EQ(info->parked, 2u);
  EXPECT_EQ(info->in_flight, 2u);
  EXPECT_EQ(info->last_error, "handler said no");
  EXPECT_GT(info->updated_at, before);

  auto parked = reg().parked("s");
  ASSERT_EQ(keys(parked), (K{5, 7}));
  EXPECT_EQ(parked[0].position, p5.position);
  EXPECT_EQ(parked[0].stream, p5.stream);
  EXPECT_EQ(parked[0].version, p5.version);
  EXPECT_EQ(parked[0].event_id, p5.event_id);
  EXPECT_EQ(parked[0].type, "Deposited");
  EXPECT_EQ(parked[0].attempts, 3u);
  EXPECT_EQ(parked[0].error, "handler said no");
  EXPECT_GT(parked[0].parked_at.time_since_epoch().count(), 0) << "the engine stamps when it was parked";
  EXPECT_FALSE(parked[0].replay_requested);

  // nullopt leaves the error as stored; a value (even empty) replaces it.
  reg().save_progress("s", {.checkpoint = 12, .unparked = {5}, .in_flight = 0});
  info = reg().get("s");
  EXPECT_EQ(info->last_error, "handler said no");
  EXPECT_EQ(info->parked, 1u);
  EXPECT_EQ(info->checkpoint, 12u);
  EXPECT_EQ(keys(reg().parked("s")), (K{7}));
  reg().save_progress("s", {.checkpoint = 12, .unparked = {99}, .last_error = ""});
  EXPECT_EQ(reg().get("s")->last_error, "");
  EXPECT_EQ(reg().get("s")->parked, 1u) << "unparking a key that is not parked changes nothing";

  // A parked event parked again (its replay failed) replaces the first record.
  ParkedEvent again = parked_event(7, "still failing");
  again.attempts = 10;
  reg().save_progress("s", {.checkpoint = 12, .newly_parked = {again}});
  parked = reg().parked("s");
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].attempts, 10u);
  EXPECT_EQ(parked[0].error, "still failing");
}

TEST_P(Registry, AReaderNeverSeesHalfAProgressReport) {
  // Each report k parks key k and moves the checkpoint to k, so a whole state has parked == checkpoint.
  reg().create(config("s"));
  auto lease = reg().acquire("s", false, 0ms);
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (std::uint64_t k = 1; k <= 150; ++k) {
      reg().save_progress("s", {.checkpoint = k, .newly_parked = {parked_event(k)}, .in_flight = k});
    }
    done = true;
  });
  int reads = 0;
  while (!done || reads < 10) {
    auto info = reg().get("s");
    ASSERT_EQ(info->parked, info->checkpoint) << "after " << reads << " reads";
    ASSERT_EQ(info->in_flight, info->checkpoint);
    for (const auto& i : reg().list()) ASSERT_EQ(i.parked, i.checkpoint);
    ++reads;
  }
  writer.join();
  EXPECT_EQ(reg().get("s")->parked, 150u);
}

TEST_P(Registry, OperationsOnAMissingSubscriptionSayItIsMissing) {
  auto expect_missing = [](auto&& call) {
    try {
      call();
      ADD_FAILURE() << "no error";
    } catch (const SubscriptionNotFound& e) {
      EXPECT_EQ(e.name(), "ghost");
      EXPECT_EQ(e.code(), ErrorCode::subscription_not_found);
    }
  };
  expect_missing([&] { reg().save_progress("ghost", {.checkpoint = 1}); });
  expect_missing([&] { reg().parked("ghost"); });
  expect_missing([&] { reg().request_replay("ghost"); });
  expect_missing([&] { reg().acquire("ghost", false, 0ms); });
  expect_missing([&] { reg().acquire("ghost", true, 100ms); });
  EXPECT_FALSE(reg().holder("ghost").has_value());
  EXPECT_FALSE(reg().get("ghost").has_value());
}

TEST_P(Registry, ParkedEventsArePagedInKeyOrder) {
  reg().create(config("s"));
  reg().create(config("other"));
  std::vector<ParkedEvent> ps;
  for (std::uint64_t k : {30, 3, 12, 25, 1, 18, 7}) ps.push_back(parked_event(k));
  reg().save_progress("s", {.checkpoint = 30, .newly_parked = ps});
  reg().save_progress("other", {.checkpoint = 2, .newly_parked = {parked_event(2)}});
  EXPECT_EQ(keys(reg().parked("s")), (K{1, 3, 7, 12, 18, 25, 30}));
  EXPECT_EQ(keys(reg().parked("s", 0, 3)), (K{1, 3, 7}));
  EXPECT_EQ(keys(reg().parked("s", 7, 3)), (K{12, 18, 25}));
  EXPECT_EQ(keys(reg().parked("s", 25, 3)), (K{30}));
  EXPECT_EQ(keys(reg().parked("s", 30, 3)), K{});
  EXPECT_EQ(keys(reg().parked("s", 0, 0)), K{});
  EXPECT_EQ(keys(reg().parked("other")), (K{2}));
}

TEST_P(Registry, ReplayMarksEveryParkedEventUntilItIsUnparked) {
  reg().create(config("s"));
  EXPECT_EQ(reg().request_replay("s"), 0u);
  reg().save_progress("s", {.checkpoint = 9, .newly_parked = {parked_event(2), parked_event(4), parked_event(6)}});
  EXPECT_EQ(reg().request_replay("s"), 3u);
  for (const auto& p : reg().parked("s")) EXPECT_TRUE(p.replay_requested) << p.key;
  // The consumer replays them: 2 succeeds (unparked), 4 fails again (parked anew), 6 not yet delivered.
  reg().save_progress("s", {.checkpoint = 9, .newly_parked = {parked_event(4, "again")}, .unparked = {2}});
  auto parked = reg().parked("s");
  ASSERT_EQ(keys(parked), (K{4, 6}));
  EXPECT_FALSE(parked[0].replay_requested) << "parked again: it waits for the next request";
  EXPECT_TRUE(parked[1].replay_requested);
  EXPECT_EQ(reg().get("s")->parked, 2u);
}

TEST_P(Registry, RemovingASubscriptionRemovesItsParkedEvents) {
  reg().create(config("s"));
  reg().save_progress("s", {.checkpoint = 9, .newly_parked = {parked_event(2)}, .last_error = "x"});
  EXPECT_TRUE(reg().remove("s"));
  PersistentSubscriptionConfig again = config("s");
  again.start_after = 3;
  reg().create(again);
  auto info = reg().get("s");
  EXPECT_EQ(info->checkpoint, 3u);
  EXPECT_EQ(info->parked, 0u);
  EXPECT_EQ(info->last_error, "");
  EXPECT_TRUE(reg().parked("s").empty());
}

TEST_P(Registry, OneLeaseAtATimeWithinAProcess) {
  reg().create(config("s"));
  reg().create(config("t"));
  EXPECT_FALSE(reg().holder("s").has_value());
  auto lease = reg().acquire("s", false, 0ms);
  ASSERT_NE(lease, nullptr);
  EXPECT_TRUE(lease->held());
  auto holder = reg().holder("s");
  ASSERT_TRUE(holder.has_value());
  EXPECT_NE(holder->find("pid " + std::to_string(::getpid())), std::string::npos) << *holder;
  try {
    reg().acquire("s", false, 0ms);
    FAIL() << "a second lease was granted";
  } catch (const SubscriptionLocked& e) {
    EXPECT_EQ(e.name(), "s");
    EXPECT_EQ(e.holder(), *holder);
    EXPECT_EQ(e.code(), ErrorCode::subscription_locked);
    EXPECT_TRUE(e.transient());
    EXPECT_NE(std::string(e.what()).find(*holder), std::string::npos) << e.what();
  }
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(reg().acquire("s", true, 150ms), SubscriptionLocked);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  // Another subscription is not held by it.
  auto other = reg().acquire("t", false, 0ms);
  EXPECT_NE(other, nullptr);

  lease.reset();
  EXPECT_FALSE(reg().holder("s").has_value());
  EXPECT_NE(reg().acquire("s", false, 0ms), nullptr);
}

// A consumer that runs a command (`sourced subscription consume --exec`) forks and execs while it holds
// the lease: the child must not keep it alive after the consumer lets go (close-on-exec).
TEST_P(Registry, AChildThatExecsDoesNotKeepTheLeaseAlive) {
  reg().create(config("s"));
  auto lease = reg().acquire("s", false, 0ms);
  ASSERT_NE(lease, nullptr);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  lease.reset();
  std::unique_ptr<SubscriptionLease> again;
  EXPECT_NO_THROW(again = reg().acquire("s", true, 2s)) << "the exec'd child still holds the lease";
  EXPECT_NE(again, nullptr);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

TEST_P(Registry, AWaitingAcquireTakesOverWhenTheLeaseIsReleased) {
  reg().create(config("s"));
  auto lease = reg().acquire("s", false, 0ms);
  std::thread releaser([&] {
    std::this_thread::sleep_for(200ms);
    lease.reset();
  });
  auto start = std::chrono::steady_clock::now();
  auto mine = reg().acquire("s", true, 10s);
  auto took = std::chrono::steady_clock::now() - start;
  releaser.join();
  EXPECT_NE(mine, nullptr);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 1s);
}

TEST_P(Registry, AWaitingAcquireEndsOnStop) {
  reg().create(config("s"));
  auto lease = reg().acquire("s", false, 0ms);
  std::stop_source stop;
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    stop.request_stop();
  });
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(reg().acquire("s", true, std::chrono::hours(1), stop.get_token()), SubscriptionLocked);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  stopper.join();
}

TEST_P(Registry, ALeaseOnADeletedSubscriptionDoesNotHoldANewOneOfTheSameName) {
  reg().create(config("s"));
  auto lease = reg().acquire("s", false, 0ms);
  EXPECT_TRUE(reg().remove("s"));
  reg().create(config("s"));
  EXPECT_FALSE(reg().holder("s").has_value());
  EXPECT_NE(reg().acquire("s", false, 0ms), nullptr);
}

TEST_P(Registry, InFlightReadsZeroWhenNobodyHoldsTheLease) {
  reg().create(config("s"));
  {
    auto lease = reg().acquire("s", false, 0ms);
    reg().save_progress("s", {.checkpoint = 1, .in_flight = 7});
    EXPECT_EQ(reg().get("s")->in_flight, 7u);
    EXPECT_EQ(reg().list().at(0).in_flight, 7u);
  }
  // Its consumer left without reporting 0 (as one killed with SIGKILL does).
  EXPECT_EQ(reg().get("s")->in_flight, 0u);
  EXPECT_EQ(reg().list().at(0).in_flight, 0u);
}

TEST_P(Registry, ALeaseAndItsProgressBelongToOneSubscriptionNotASuccessorOfTheSameName) {
  reg().create(config("s"));
  auto old_lease = reg().acquire("s", false, 0ms);
  std::uint64_t first = reg().get("s")->id;
  EXPECT_EQ(old_lease->subscription_id(), first);
  reg().save_progress("s", {.checkpoint = 2, .subscription_id = first});
  EXPECT_EQ(reg().get("s")->checkpoint, 2u);

  reg().remove("s");
  reg().create(config("s"));
  std::uint64_t second = reg().get("s")->id;
  EXPECT_NE(second, first);
  EXPECT_THROW(
      reg().save_progress("s", {.checkpoint = 5000, .newly_parked = {parked_event(7)}, .subscription_id = first}),
      SubscriptionNotFound);
  EXPECT_EQ(reg().get("s")->checkpoint, 0u) << "the old consumer's progress went into the new subscription";
  EXPECT_TRUE(reg().parked("s").empty());

  auto lease = reg().acquire("s", false, 0ms);  // not held by the old lease
  EXPECT_EQ(lease->subscription_id(), second);
  reg().save_progress("s", {.checkpoint = 3, .subscription_id = second});
  EXPECT_EQ(reg().get("s")->checkpoint, 3u);
}

TEST_P(Registry, AWaitingAcquireDoesNotWaitForADeletedSubscription) {
  reg().create(config("s"));
  auto old_lease = reg().acquire("s", false, 0ms);
  std::unique_ptr<SubscriptionLease> lease;
  bool not_found = false;
  std::thread waiter([&] {
    try {
      lease = reg().acquire("s", true, 5s);
    } catch (const SubscriptionNotFound&) {
      not_found = true;  // it looked between the deletion and the creation
    } catch (const Error&) {
    }
  });
  std::this_thread::sleep_for(100ms);
  reg().remove("s");
  reg().create(config("s"));
  auto t0 = std::chrono::steady_clock::now();
  waiter.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << "waited for the deleted subscription's lease";
  ASSERT_TRUE(lease != nullptr || not_found);
  if (lease) {
    EXPECT_EQ(lease->subscription_id(), reg().get("s")->id) << "holds the deleted subscription";
    EXPECT_THROW(reg().acquire("s", false, 0ms), SubscriptionLocked);
  }
}

TEST_P(Registry, ALeaseOutlivesItsStore) {
  reg().create(config("s"));
  auto lease = reg().acquire("s", false, 0ms);
  store_.reset();
  lease.reset();  // must not touch the destroyed store
  SUCCEED();
}

TEST_P(Registry, StateSurvivesReopeningTheStore) {
  if (!harness_->durable()) GTEST_SKIP() << "the memory engine keeps nothing";
  PersistentSubscriptionConfig c = config("s");
  c.filter = EventFilter{.category = "order", .event_types = {"Placed"}};
  reg().create(c);
  auto lease = reg().acquire("s", false, 0ms);  // held across the reopening: in_flight is still reported
  reg().save_progress("s", {.checkpoint = 9, .newly_parked = {parked_event(4)}, .in_flight = 1, .last_error = "e"});
  reg().request_replay("s");
  auto before = reg().get("s");
  store_.reset();
  store_ = harness_->open();
  auto after = reg().get("s");
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->checkpoint, 9u);
  EXPECT_EQ(after->parked, 1u);
  EXPECT_EQ(after->in_flight, 1u);
  EXPECT_EQ(after->last_error, "e");
  EXPECT_EQ(after->created_at, before->created_at);
  EXPECT_EQ(after->updated_at, before->updated_at);
  EXPECT_EQ(after->config.filter->category, std::optional<std::string>("order"));
  EXPECT_EQ(after->config.filter->event_types, std::vector<std::string>{"Placed"});
  auto parked = reg().parked("s");
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_TRUE(parked[0].replay_requested);
  EXPECT_EQ(parked[0].parked_at, reg().parked("s")[0].parked_at);
}

// A lease_holder process, stopped with SIGKILL (if still running) when the test ends.
class HolderProcess {
 public:
  HolderProcess(const std::string& location, const std::string& name) {
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      ::execl(LEASE_HOLDER, LEASE_HOLDER, location.c_str(), name.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = ::fdopen(out[0], "r");
  }
  ~HolderProcess() {
    kill();
    if (out_) std::fclose(out_);
  }
  // Blocks until the process says it holds the lease; false when it exited instead.
  bool wait_until_held() {
    char line[64] = {};
    return std::fgets(line, sizeof line, out_) && std::string(line) == "held\n";
  }
  // True when the process printed nothing for `d` (it did not take the lease).
  bool quiet_for(std::chrono::milliseconds d) {
    struct pollfd p = {::fileno(out_), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(d.count())) == 0;
  }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::FILE* out_ = nullptr;
};

TEST_P(Registry, OneLeaseAtATimeAcrossProcessesAndTakeoverWhenTheHolderDies) {
  auto location = harness_->location();
  if (!location) GTEST_SKIP() << "no other process can open this store";
  reg().create(config("s"));
  HolderProcess other(*location, "s");
  ASSERT_TRUE(other.wait_until_held());

  std::string pid = "pid " + std::to_string(other.pid());
  auto holder = reg().holder("s");
  ASSERT_TRUE(holder.has_value());
  EXPECT_NE(holder->find(pid), std::string::npos) << *holder;
  try {
    reg().acquire("s", false, 0ms);
    FAIL() << "a second lease was granted while another process holds it";
  } catch (const SubscriptionLocked& e) {
    EXPECT_NE(e.holder().find(pid), std::string::npos) << e.holder();
  }

  std::unique_ptr<SubscriptionLease> mine;
  std::chrono::steady_clock::time_point killed, taken;
  std::thread waiter([&] {
    mine = reg().acquire("s", true, 30s);
    taken = std::chrono::steady_clock::now();
  });
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(mine, nullptr) << "taken while the other process still held it";
  killed = std::chrono::steady_clock::now();
  other.kill();
  waiter.join();
  ASSERT_NE(mine, nullptr);
  auto takeover = std::chrono::duration_cast<std::chrono::milliseconds>(taken - killed);
  EXPECT_LT(takeover, 5s);
  std::printf("takeover after SIGKILL: %lld ms\n", static_cast<long long>(takeover.count()));
  auto now_holder = reg().holder("s");
  ASSERT_TRUE(now_holder.has_value());
  EXPECT_NE(now_holder->find("pid " + std::to_string(::getpid())), std::string::npos) << *now_holder;

  // And the other way: while this process holds it, another one cannot take it.
  HolderProcess late(*location, "s");
  EXPECT_TRUE(late.quiet_for(300ms)) << "another process took the lease while this one held it";
  mine.reset();
  EXPECT_TRUE(late.wait_until_held());
}

INSTANTIATE_TEST_SUITE_P(Engines, Registry, ::testing::ValuesIn(all_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
