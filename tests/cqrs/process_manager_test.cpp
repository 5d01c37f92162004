#include "sourced/process_manager.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "cqrs/faulty_store.hpp"
#include "cqrs/transfer_app.hpp"
#include "store/engines.hpp"

namespace sourced {
namespace {

using namespace std::chrono_literals;
using namespace testing::bank;
using sourced::testing::EngineParam;

class ProcessManagerTest : public ::testing::TestWithParam<EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    store_ = harness_->open();
    app_ = std::make_unique<TransferApp>(*store_);
    app_->manager.create_subscription();
    app_->bus.dispatch(Open{"ada", "Ada"});
    app_->bus.dispatch(Deposit{"ada", 100});
    app_->bus.dispatch(Open{"bob", "Bob"});
  }
  TransferApp& app() { return *app_; }
  // The events of `stream` that carry `correlation`.
  std::vector<std::string> types_in(const std::string& stream, const Uuid& correlation) {
    std::vector<std::string> out;
    for (const auto& e : store_->read_stream(stream).to_vector()) {
      if (e.correlation_id == correlation) out.push_back(e.type);
    }
    return out;
  }

  std::unique_ptr<testing::EngineHarness> harness_;
  std::unique_ptr<EventStore> store_;
  std::unique_ptr<TransferApp> app_;
};

INSTANTIATE_TEST_SUITE_P(Engines, ProcessManagerTest, ::testing::ValuesIn(testing::all_engines()),
                         [](const auto& info) { return info.param.name; });

TEST_P(ProcessManagerTest, ATransferDebitsCreditsCompletesAndStops) {
  Uuid id = Uuid::v7();
  app().request("t1", "ada", "bob", 30, id);
  ASSERT_TRUE(app().manager.run_until_stopped(id.to_string(), 20s));
  EXPECT_EQ(app().stage("t1"), Transfer::Stage::completed);
  EXPECT_EQ(app().balance("ada"), 70);
  EXPECT_EQ(app().balance("bob"), 30);
  EXPECT_EQ(types_in("account-ada", id), std::vector<std::string>{"MoneyWithdrawn"});
  EXPECT_EQ(types_in("account-bob", id), std::vector<std::string>{"MoneyDeposited"});
  EXPECT_FALSE(app().manager.instance(id.to_string())) << "a stopped instance is gone";
  EXPECT_TRUE(app().manager.stopped(id.to_string()));
  // The commands were dispatched with ids derived from the process manager, the event and the index.
  auto request = store_->read_stream("transfer-t1").to_vector().at(0);
  auto debit = store_->read_stream("account-ada").to_vector().back();
  EXPECT_EQ(debit.causation_id, process_command_id("transfers", request.id, 0));
  EXPECT_EQ(debit.id, command_event_id(process_command_id("transfers", request.id, 0), 0));
}

TEST_P(ProcessManagerTest, ACreditToAClosedAccountIsRefundedOnce) {
  app().bus.dispatch(Close{"bob"});
  Uuid id = Uuid::v7();
  app().request("t1", "ada", "bob", 30, id);
  ASSERT_TRUE(app().manager.run_until_stopped(id.to_string(), 20s));
  EXPECT_EQ(app().stage("t1"), Transfer::Stage::compensated);
  EXPECT_EQ(app().balance("ada"), 100);
  EXPECT_EQ(types_in("account-ada", id), (std::vector<std::string>{"MoneyWithdrawn", "MoneyDeposited"}));
  EXPECT_EQ(types_in("account-bob", id), std::vector<std::string>{});
  // The rejection was recorded in the instance's stream before the compensation went out.
  std::vector<std::string> records;
  for (const auto& e : store_->read_stream(app().manager.instance_stream(id.to_string())).to_vector()) {
    records.push_back(e.type);
  }
  EXPECT_EQ(records, (std::vector<std::string>{"$process-state", "$process-rejected", "$process-state",
                                               "$process-state", "$process-state", "$process-stopped"}));
}

TEST_P(ProcessManagerTest, ARejectedDebitFailsTheTransfer) {
  Uuid id = Uuid::v7();
  app().request("t1", "ada", "bob", 500, id);
  ASSERT_TRUE(app().manager.run_until_stopped(id.to_string(), 20s));
  EXPECT_EQ(app().stage("t1"), Transfer::Stage::failed);
  EXPECT_EQ(app().balance("ada"), 100);
  EXPECT_EQ(app().balance("bob"), 0);
}

TEST_P(ProcessManagerTest, HandlingAnEventAgainDispatchesNothingNew) {
  Uuid id = Uuid::v7();
  app().request("t1", "ada", "bob", 30, id);
  auto requested = store_->read_stream("transfer-t1").to_vector().at(0);
  ProcessStep first = app().manager.handle(requested);
  EXPECT_TRUE(first.started);
  EXPECT_EQ(first.commands, 1u);
  Position head = store_->head_position();
  ProcessStep again = app().manager.handle(requested);
  EXPECT_TRUE(again.skipped) << "the instance had handled it";
  EXPECT_EQ(store_->head_position(), head);
  // Lost state (a crash before it was saved): the command goes out again and the store writes nothing.
  store_->delete_stream(app().manager.instance_stream(id.to_string()), ExpectedVersion::any(), DeleteMode::soft);
  ProcessStep redo = app().manager.handle(requested);
  EXPECT_EQ(redo.commands, 1u);
  EXPECT_EQ(redo.repeated, 1u);
  EXPECT_EQ(app().balance("ada"), 70);
  EXPECT_EQ(types_in("account-ada", id), std::vector<std::string>{"MoneyWithdrawn"});
}

TEST_P(ProcessManagerTest, ARejectionRecordedBeforeACrashIsNotDecidedAgain) {
  // The debit is rejected (insufficient funds) and the transfer failed, then the process dies before
  // saving the state. Money arrives before the event is delivered again: deciding the debit again would
  // now take the money of a failed transfer. The recorded rejection stands instead.
  Uuid id = Uuid::v7();
  app().request("t1", "ada", "bob", 500, id);
  auto requested = store_->read_stream("transfer-t1").to_vector().at(0);
  std::mt19937_64 rng(1);
  testing::FaultyStore faulty(*store_, rng);
  faulty.fail_when = [](std::string_view, std::span<const EventData> events) {
    return events[0].type == "$process-state";
  };
  {
    TransferApp crashing(faulty);
    EXPECT_THROW(crashing.manager.handle(requested), testing::Crash);
  }
  EXPECT_EQ(app().stage("t1"), Transfer::Stage::failed) << "the compensation went out before the crash";
  app().bus.dispatch(Deposit{"ada", 1000});
  ProcessStep again = app().manager.handle(requested);
  EXPECT_EQ(again.rejected, 1u);
  EXPECT_EQ(again.repeated, 1u) << "the compensation is not sent twice";
  EXPECT_EQ(app().balance("ada"), 1100);
  EXPECT_EQ(types_in("account-ada", id), std::vector<std::string>{});
}

TEST_P(ProcessManagerTest, EventsOfNoRunningInstanceAreIgnored) {
  // An ordinary withdrawal routes "proceed" by its own correlation id: no instance, nothing happens.
  app().bus.dispatch(Withdraw{"ada", 10});
  auto withdrawn = store_->read_stream("account-ada").to_vector().back();
  ProcessStep step = app().manager.handle(withdrawn);
  EXPECT_EQ(step.action, ProcessRoute::Action::proceed);
  EXPECT_TRUE(step.skipped);
  EXPECT_FALSE(store_->stream_info(app().manager.instance_stream(step.key)));
}

TEST_P(ProcessManagerTest, TheRunnerMovesTransfersOnItsOwnThread) {
  app().bus.dispatch(Close{"bob"});
  app().bus.dispatch(Open{"cy", "Cy"});
  Uuid a = Uuid::v7(), b = Uuid::v7();
  {
    ProcessManagerRunner runner(app().manager);
    app().request("t1", "ada", "cy", 30, a);
    app().request("t2", "ada", "bob", 20, b);
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline &&
           !(app().manager.stopped(a.to_string()) && app().manager.stopped(b.to_string()))) {
      std::this_thread::sleep_for(10ms);
    }
    runner.stop();
    EXPECT_FALSE(runner.error());
  }
  EXPECT_EQ(app().stage("t1"), Transfer::Stage::completed);
  EXPECT_EQ(app().stage("t2"), Transfer::Stage::compensated);
  EXPECT_EQ(app().balance("ada"), 70);
  EXPECT_EQ(app().balance("cy"), 30);
  // Nothing is left to do: the checkpoint passed every event.
  EXPECT_EQ(app().manager.run_until_idle(200ms, 10s), 0u);
}

// The first append of a process state fails (a store error, not a crash); `failed` says whether it did.
void fail_first_state_save(testing::FaultyStore& faulty, bool& failed) {
  faulty.fail_when = [&failed](std::string_view, std::span<const EventData> events) {
    if (failed || events[0].type != "$process-state") return false;
    failed = true;
    return true;
  };
}

TEST_P(ProcessManagerTest, AStateSaveThatFailsOnceDoesNotLoseTheNextEvent) {
  // Review 5, PM-1: the first state save fails (a store error, not a crash), so the request is nacked
  // and retried after a back-off. The debit it dispatched is already in the store: delivered meanwhile
  // it found no running instance and was acked, and the transfer never moved past "debited".
  std::mt19937_64 rng(1);
  testing::FaultyStore faulty(*store_, rng);
  bool failed = false;
  fail_first_state_save(faulty, failed);
  TransferApp flaky(faulty);
  Uuid id = Uuid::v7();
  app().request("t1", "ada", "bob", 30, id);
  EXPECT_TRUE(flaky.manager.run_until_stopped(id.to_string(), 5s)) << "the transfer did not end";
  EXPECT_TRUE(failed);
  EXPECT_EQ(app().stage("t1"), Transfer::Stage::completed);
  EXPECT_EQ(app().balance("ada"), 70);
  EXPECT_EQ(app().balance("bob"), 30);
  auto info = persistent_subscription_info(*store_, "transfers");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->config.max_in_flight, 1u) << "a process manager's subscription is created with one in flight";
}

TEST_P(ProcessManagerTest, AnExistingSubscriptionWithMoreInFlightIsConsumedOneAtATime) {
  // A subscription created before the fix (or by hand) with max_in_flight 100: the consumer caps it.
  ASSERT_TRUE(delete_persistent_subscription(*store_, "transfers"));
  create_persistent_subscription(*store_, "transfers", {.max_in_flight = 100});
  std::mt19937_64 rng(1);
  testing::FaultyStore faulty(*store_, rng);
  bool failed = false;
  fail_first_state_save(faulty, failed);
  TransferApp flaky(faulty);
  Uuid id = Uuid::v7();
  app().request("t1", "ada", "bob", 30, id);
  EXPECT_TRUE(flaky.manager.run_until_stopped(id.to_string(), 5s)) << "the transfer did not end";
  EXPECT_EQ(app().stage("t1"), Transfer::Stage::completed);
  EXPECT_EQ(app().balance("bob"), 30);
}

TEST_P(ProcessManagerTest, AReplayedEventTheInstanceHasMovedPastIsParkedAgainNotAcked) {
  Uuid id = Uuid::v7();
  app().request("t1", "ada", "bob", 30, id);
  ASSERT_TRUE(app().manager.run_until_stopped(id.to_string(), 20s));
  auto requested = store_->read_stream("transfer-t1").to_vector().at(0);
  // An ordinary redelivery (after a crash) of an event the instance handled: skipped.
  EXPECT_TRUE(app().manager.handle(requested).skipped);
  // The same event as a replay of a parked event: the instance has handled later events since.
  try {
    app().manager.handle(requested, true);
    ADD_FAILURE() << "a replay behind the instance was handled";
  } catch (const ProcessEventOutOfOrder& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("process manager transfers, instance " + id.to_string()), std::string::npos) << what;
    EXPECT_NE(what.find(requested.id.to_string()), std::string::npos) << what;
    EXPECT_NE(what.find("out of order"), std::string::npos) << what;
  }
  // The runners park it again at once (retrying cannot cure it) instead of acking it.
  // (A subscription of its own delivers the request; the handler treats it as the replay it stands for.)
  create_persistent_subscription(*store_, "replays",
                                 {.start = SubscriptionStart::after(Position(requested.position.value() - 1))});
  auto sub = open_persistent_subscription(*store_, "replays");
  auto d = sub.next(5s);
  ASSERT_TRUE(d);
  ASSERT_EQ(d->event->id, requested.id);
  EXPECT_FALSE(detail::settle_process_delivery(
      sub, *d, [&](const PersistentDelivery& x) { app().manager.handle(*x.event, true); }));
  sub.close();
  auto parked = store_->subscriptions().parked("replays");
  ASSERT_EQ(parked.size(), 1u);
  EXPECT_EQ(parked[0].event_id, requested.id);
  EXPECT_NE(parked[0].error.find("out of order"), std::string::npos) << parked[0].error;
}

TEST_P(ProcessManagerTest, AnExistingSubscriptionThatFiltersOutATypeTheManagerNowReadsIsRefused) {
  // Review 5, PM-5: the subscription was created by an older version whose registry lacked a type (a
  // route added since). Its filter would keep that type out forever; the instances would wait.
  auto created = persistent_subscription_info(*store_, "transfers");
  ASSERT_TRUE(created && created->config.filter);
  std::vector<std::string> types = created->config.filter->event_types;
  ASSERT_GE(types.size(), 2u);
  const std::string dropped = types.back();
  types.pop_back();
  auto recreate = [&](std::optional<EventFilter> filter) {
    ASSERT_TRUE(delete_persistent_subscription(*store_, "transfers"));
    create_persistent_subscription(*store_, "transfers", {.filter = std::move(filter), .max_in_flight = 1});
  };
  recreate(EventFilter{.event_types = types});
  try {
    app().manager.create_subscription();
    ADD_FAILURE() << "an existing subscription missing " << dropped << " was accepted";
  } catch (const InvalidArgument& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("process manager transfers"), std::string::npos) << what;
    EXPECT_NE(what.find("missing types: " + dropped), std::string::npos) << what;
  }
  EXPECT_THROW(app().manager.run_until_idle(10ms, 1s), InvalidArgument);
  EXPECT_THROW(ProcessManagerRunner{app().manager}, InvalidArgument);
  // Wider filters deliver everything it reads: accepted.
  types.push_back(dropped);
  types.push_back("SomethingElse");
  std::reverse(types.begin(), types.end());
  recreate(EventFilter{.event_types = types});
  EXPECT_FALSE(app().manager.create_subscription());
  recreate(std::nullopt);
  EXPECT_FALSE(app().manager.create_subscription());
  EXPECT_NO_THROW(app().manager.run_until_idle(10ms, 5s));
  // Another category is refused too.
  recreate(EventFilter{.category = "account"});
  EXPECT_THROW(app().manager.create_subscription(), InvalidArgument);
}

TEST_P(ProcessManagerTest, AnOlderSubscriptionShowsOneEventInFlightOnceTheManagerStarts) {
  // Made before process managers had one event in flight: it says 100 in `sourced subscriptions` although
  // the consumers deliver one at a time. Starting the manager brings the stored limit in line and keeps
  // its max_attempts.
  auto created = persistent_subscription_info(*store_, "transfers");
  ASSERT_TRUE(created);
  ASSERT_TRUE(delete_persistent_subscription(*store_, "transfers"));
  create_persistent_subscription(*store_, "transfers",
                                 {.filter = created->config.filter, .max_in_flight = 100, .max_attempts = 7});
  EXPECT_FALSE(app().manager.create_subscription());
  auto now = persistent_subscription_info(*store_, "transfers");
  ASSERT_TRUE(now);
  EXPECT_EQ(now->config.max_in_flight, 1u);
  EXPECT_EQ(now->config.max_attempts, 7u);
  ASSERT_TRUE(now->config.filter && created->config.filter);
  EXPECT_EQ(now->config.filter->event_types, created->config.filter->event_types);
}

TEST_P(ProcessManagerTest, WaitingForTheLeaseHonoursTheCallersTimeoutDoneAndStop) {
  // Review 5, PM-3: another consumer (another process's runner) holds the subscription.
  auto holder = std::make_optional(open_persistent_subscription(*store_, "transfers"));
  using Clock = std::chrono::steady_clock;
  // run_until gives up at its own timeout, not after the lease's 30 s.
  auto t0 = Clock::now();
  EXPECT_FALSE(app().manager.run_until([] { return false; }, 300ms));
  EXPECT_LT(Clock::now() - t0, 3s);
  // It answers as soon as done() turns true (the holder did the work), while still waiting.
  std::atomic<bool> finished{false};
  std::jthread elsewhere([&] {
    std::this_thread::sleep_for(200ms);
    finished = true;
  });
  t0 = Clock::now();
  EXPECT_TRUE(app().manager.run_until([&] { return finished.load(); }, 20s));
  EXPECT_LT(Clock::now() - t0, 3s);
  // A standby runner keeps waiting past lease_timeout, then takes over when the holder lets go.
  ProcessManagerOptions quick_lease;
  quick_lease.consumer.lease_timeout = 100ms;
  TransferApp standby_app(*store_, quick_lease);
  {
    ProcessManagerRunner standby(standby_app.manager);
    std::this_thread::sleep_for(500ms);
    EXPECT_TRUE(standby.running());
    EXPECT_FALSE(standby.error()) << "a standby gave up waiting for the lease";
    holder.reset();
    Uuid id = Uuid::v7();
    app().request("t1", "ada", "bob", 30, id);
    auto deadline = Clock::now() + 20s;
    while (Clock::now() < deadline && !app().manager.stopped(id.to_string())) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(app().stage("t1"), Transfer::Stage::completed);
    standby.stop();
    EXPECT_FALSE(standby.error());
  }
  // stop() ends a standby's wait at once.
  holder.emplace(open_persistent_subscription(*store_, "transfers"));
  ProcessManagerRunner waiting(standby_app.manager);
  std::this_thread::sleep_for(50ms);
  t0 = Clock::now();
  waiting.stop();
  EXPECT_LT(Clock::now() - t0, 2s);
  EXPECT_FALSE(waiting.running());
  EXPECT_FALSE(waiting.error());
}

TEST_P(ProcessManagerTest, BadNamesAndKeysAreClearErrors) {
  EXPECT_THROW(TransferManager(*store_, transfer_process_events(), app().bus, "no spaces"), InvalidArgument);
  // Review 5, PM-4: "a" with key "b-x" and "a-b" with key "x" would share process-a-b-x.
  try {
    TransferManager(*store_, transfer_process_events(), app().bus, "transfers-v2");
    ADD_FAILURE() << "a name with '-' was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("process manager name 'transfers-v2' contains '-'"), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(TransferManager(*store_, transfer_process_events(), app().bus, "transfers_v2.eu"));
  EXPECT_FALSE(app().manager.create_subscription()) << "it exists";
}

}  // namespace
}  // namespace sourced
