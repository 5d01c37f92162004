#include "sourced/repository.hpp"

#include <atomic>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "cqrs/bank_domain.hpp"
#include "sourced/open_store.hpp"
#include "store/engines.hpp"

namespace sourced {
namespace {

using namespace testing::bank;
using sourced::testing::EngineParam;
using AccountRepository = Repository<Account, Events>;

class RepositoryTest : public ::testing::TestWithParam<EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    store_ = harness_->open();
  }
  EventStore& store() { return *store_; }

  std::unique_ptr<testing::EngineHarness> harness_;
  std::unique_ptr<EventStore> store_;
};

INSTANTIATE_TEST_SUITE_P(Engines, RepositoryTest, ::testing::ValuesIn(testing::all_engines()),
                         [](const auto& info) { return info.param.name; });

TEST_P(RepositoryTest, HandleAppendsTheDecidedEventsStampedWithTheCommandsIds) {
  AccountRepository accounts(store(), events());
  auto correlation = Uuid::v7();
  auto opened = accounts.handle("account-ada", Open{"ada", "Ada"}, {.correlation_id = correlation});
  EXPECT_FALSE(opened.rejected());
  EXPECT_EQ(opened.stream_version, StreamVersion(1));
  auto deposited = accounts.handle("account-ada", Deposit{"ada", 100});
  EXPECT_EQ(deposited.stream_version, StreamVersion(2));
  EXPECT_EQ(deposited.position, store().head_position());
  EXPECT_EQ(deposited.events_written, 1u);
  EXPECT_EQ(deposited.attempts, 1);

  auto stored = store().read_stream("account-ada").to_vector();
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].type, "AccountOpened");
  EXPECT_EQ(stored[0].content_type, ContentType::json);
  EXPECT_EQ(stored[0].correlation_id, correlation);
  EXPECT_EQ(stored[0].causation_id, opened.command_id);
  // Without a correlation id, the command starts its own conversation.
  EXPECT_EQ(stored[1].correlation_id, deposited.command_id);
  EXPECT_EQ(stored[1].causation_id, deposited.command_id);
  EXPECT_EQ(stored[1].position, deposited.position);

  auto loaded = accounts.load("account-ada");
  EXPECT_EQ(loaded.state, (Account::State{true, "Ada", 100, 2}));
  EXPECT_EQ(loaded.version, StreamVersion(2));
  EXPECT_TRUE(loaded.exists);
}

TEST_P(RepositoryTest, ARejectionWritesNothing) {
  AccountRepository accounts(store(), events());
  accounts.handle("account-ada", Open{"ada", "Ada"});
  auto r = accounts.handle("account-ada", Withdraw{"ada", 5});
  ASSERT_TRUE(r.rejected());
  EXPECT_EQ(r.rejection->reason, "insufficient funds");
  EXPECT_EQ(r.stream_version, StreamVersion(1));
  EXPECT_EQ(r.position, Position(0));
  EXPECT_EQ(store().head_position(), Position(1));
  EXPECT_TRUE(accounts.handle("account-new", Deposit{"new", 5}).rejected());
  EXPECT_FALSE(store().stream_info("account-new"));
}

// The same random commands through repositories with and without snapshots: every load agrees.
TEST_P(RepositoryTest, SnapshotsAndCachedStatesOnAndOffGiveTheSameState) {
  // Each repository writes a third of the commands: the cached one sees the stream move under it.
  AccountRepository plain(store(), events(), {}, {.cached_states = 0});
  AccountRepository snapshotting(store(), events(), {}, {.snapshot_every = 7, .cached_states = 0});
  AccountRepository often(store(), events(), {}, {.snapshot_every = 1, .cached_states = 2});
  AccountRepository cached(store(), events());
  std::mt19937_64 rng(42);
  const std::vector<std::string> ids = {"a", "b", "c"};
  for (const auto& id : ids) plain.handle("account-" + id, Open{id, "owner " + id});
  for (int i = 0; i < 150; ++i) {
    const std::string& id = ids[rng() % ids.size()];
    const AccountRepository& via = i % 4 == 0 ? plain : i % 4 == 1 ? snapshotting : i % 4 == 2 ? often : cached;
    if (rng() % 3 == 0) {
      via.handle("account-" + id, Withdraw{id, static_cast<long>(rng() % 50)});
    } else {
      via.handle("account-" + id, Deposit{id, static_cast<long>(rng() % 40 + 1)});
    }
    if (i % 10 == 0) {
      for (const auto& each : ids) {
        auto a = plain.load("account-" + each), b = snapshotting.load("account-" + each),
             c = often.load("account-" + each), d = cached.load("account-" + each);
        ASSERT_EQ(a.state, b.state) << "account-" << each << " after command " << i;
        ASSERT_EQ(a.state, c.state) << "account-" << each << " after command " << i;
        ASSERT_EQ(a.state, d.state) << "account-" << each << " after command " << i;
        ASSERT_EQ(a.version, b.version);
        ASSERT_EQ(a.version, c.version);
        ASSERT_EQ(a.version, d.version);
        ASSERT_EQ(a.state.events, static_cast<long>(a.version.value()));
      }
    }
  }
  for (const auto& each : ids) {
    auto a = plain.load("account-" + each), b = snapshotting.load("account-" + each);
    EXPECT_EQ(a.state, b.state);
    EXPECT_EQ(a.snapshot, StreamVersion(0));
    EXPECT_GT(b.snapshot.value(), 0u) << "no snapshot was used for account-" << each;
    EXPECT_LT(b.events_folded, a.events_folded);
    EXPECT_TRUE(store().stream_info("snapshot-account-" + each));
  }
}

// A decider whose state's stored shape changed: snapshots of the old version are not read.
struct AccountV2 : Account {
  static constexpr int kSnapshotVersion = 2;
};

TEST_P(RepositoryTest, ASnapshotOfAnotherStateVersionIsIgnored) {
  AccountRepository v1(store(), events(), {}, {.snapshot_every = 1, .cached_states = 0});
  v1.handle("account-ada", Open{"ada", "Ada"});
  v1.handle("account-ada", Deposit{"ada", 30});
  EXPECT_EQ(v1.load("account-ada").snapshot, StreamVersion(2));
  Repository<AccountV2, Events> v2(store(), events(), {}, {.snapshot_every = 100, .cached_states = 0});
  auto loaded = v2.load("account-ada");
  EXPECT_EQ(loaded.snapshot, StreamVersion(0));
  EXPECT_EQ(loaded.state, (Account::State{true, "Ada", 30, 2}));
}

EventData snapshot_event(std::string data, std::string metadata) {
  EventData e;
  e.type = "$snapshot";
  e.data = std::move(data);
  e.metadata = std::move(metadata);
  return e;
}

TEST_P(RepositoryTest, AnUnreadableOrForeignSnapshotIsIgnored) {
  AccountRepository accounts(store(), events(), {}, {.snapshot_every = 1000, .cached_states = 0});
  accounts.handle("account-ada", Open{"ada", "Ada"});
  accounts.handle("account-ada", Deposit{"ada", 30});
  const Account::State expected{true, "Ada", 30, 2};
  auto stored = store().read_stream("account-ada").to_vector();
  const std::string good_meta =
      R"({"stream_version":2,"event_id":")" + stored[1].id.to_string() + R"(","snapshot_version":1})";
  const std::string lying_state = R"({"open":true,"owner":"Mallory","balance":999999,"events":2})";
  ASSERT_TRUE(accounts.save_snapshot("account-ada"));
  ASSERT_EQ(accounts.load("account-ada").snapshot, StreamVersion(2));
  // Each of these is the latest snapshot in turn; each must be ignored.
  const std::vector<std::pair<std::string, EventData>> bad = {
      {"data that is not JSON", snapshot_event("{", good_meta)},
      {"data of another shape", snapshot_event(R"({"balance":"lots"})", good_meta)},
      {"metadata that is not JSON", snapshot_event(lying_state, "nope")},
      {"metadata without the event id", snapshot_event(lying_state, R"({"stream_version":2,"snapshot_version":1})")},
      {"an event id the stream does not have at that version",
       snapshot_event(lying_state,
                      R"({"stream_version":2,"event_id":")" + Uuid::v4().to_string() + R"(","snapshot_version":1})")},
      {"a version the stream does not have",
       snapshot_event(lying_state,
                      R"({"stream_version":9,"event_id":")" + stored[1].id.to_string() + R"(","snapshot_version":1})")},
  };
  for (const auto& [what, e] : bad) {
    store().append("snapshot-account-ada", ExpectedVersion::any(), {e});
    auto loaded = accounts.load("account-ada");
    EXPECT_EQ(loaded.state, expected) << what;
    EXPECT_EQ(loaded.snapshot, StreamVersion(0)) << what;
  }
  // A good one again is used.
  store().append("snapshot-account-ada", ExpectedVersion::any(),
                 {snapshot_event(R"({"open":true,"owner":"Ada","balance":30,"events":2})", good_meta)});
  EXPECT_EQ(accounts.load("account-ada").snapshot, StreamVersion(2));
}

TEST_P(RepositoryTest, ASnapshotTakenBeforeASoftDeleteIsIgnored) {
  AccountRepository accounts(store(), events(), {}, {.snapshot_every = 1});
  accounts.handle("account-ada", Open{"ada", "Ada"});
  accounts.handle("account-ada", Deposit{"ada", 30});
  store().delete_stream("account-ada", ExpectedVersion::any(), DeleteMode::soft);
  EXPECT_FALSE(accounts.load("account-ada").exists);
  EXPECT_EQ(accounts.load("account-ada").state, Account::State{});
  accounts.handle("account-ada", Open{"ada", "Ada again"});
  accounts.handle("account-ada", Deposit{"ada", 5});
  auto loaded = accounts.load("account-ada");
  EXPECT_EQ(loaded.state, (Account::State{true, "Ada again", 5, 2}));
  EXPECT_EQ(loaded.version, StreamVersion(4));
}

TEST_P(RepositoryTest, ACachedStateFollowsWhatOthersWroteAndDeleted) {
  AccountRepository mine(store(), events());
  AccountRepository theirs(store(), events(), {}, {.cached_states = 0});
  mine.handle("account-ada", Open{"ada", "Ada"});
  mine.handle("account-ada", Deposit{"ada", 100});
  EXPECT_EQ(mine.load("account-ada").base, StreamVersion(2)) << "the cached state was not used";
  theirs.handle("account-ada", Withdraw{"ada", 80});
  auto loaded = mine.load("account-ada");
  EXPECT_EQ(loaded.state.balance, 20);
  EXPECT_EQ(loaded.events_folded, 1u);  // only the new event was read
  // Decided on the current balance, not the cached one.
  theirs.handle("account-ada", Withdraw{"ada", 20});
  EXPECT_TRUE(mine.handle("account-ada", Withdraw{"ada", 1}).rejected());
  // A rejection writes nothing, so no append checks the cached state it was decided on: it is checked.
  theirs.handle("account-ada", Deposit{"ada", 50});
  EXPECT_FALSE(mine.handle("account-ada", Withdraw{"ada", 10}).rejected()) << "rejected on a stale cached balance";
  EXPECT_EQ(theirs.load("account-ada").state.balance, 40);
  store().delete_stream("account-ada", ExpectedVersion::any(), DeleteMode::soft);
  EXPECT_FALSE(mine.load("account-ada").exists);
  EXPECT_TRUE(mine.handle("account-ada", Deposit{"ada", 1}).rejected()) << "decided on the state before the delete";
  mine.handle("account-ada", Open{"ada", "Ada again"});
  store().delete_stream("account-ada", ExpectedVersion::any(), DeleteMode::soft);
  theirs.handle("account-ada", Open{"ada", "Ada a third time"});
  EXPECT_EQ(mine.load("account-ada").state, (Account::State{true, "Ada a third time", 0, 1}));
  store().delete_stream("account-ada", ExpectedVersion::any(), DeleteMode::tombstone);
  EXPECT_THROW(mine.load("account-ada"), StreamDeleted);
}

// A decider that lets a test act between the load and the append, to race deterministically.
std::function<void()> between_load_and_append;
struct InterruptedAccount : Account {
  using Account::decide;
  static Decision<Event> decide(const Withdraw& c, const State& s) {
    if (auto hook = std::exchange(between_load_and_append, nullptr)) hook();
    return Account::decide(c, s);
  }
};

TEST_P(RepositoryTest, AConcurrentWriteMakesItReloadAndDecideAgain) {
  Repository<InterruptedAccount, Events> accounts(store(), events());
  accounts.handle("account-ada", Open{"ada", "Ada"});
  accounts.handle("account-ada", Deposit{"ada", 100});
  // Another teller withdraws 70 after this one loaded a balance of 100.
  between_load_and_append = [&] { accounts.handle("account-ada", Withdraw{"ada", 70}); };
  auto r = accounts.handle("account-ada", Withdraw{"ada", 50});
  EXPECT_EQ(r.attempts, 2);
  ASSERT_TRUE(r.rejected()) << "decided on a stale balance";
  EXPECT_EQ(accounts.load("account-ada").state.balance, 30);

  between_load_and_append = [&] { accounts.handle("account-ada", Deposit{"ada", 1}); };
  Repository<InterruptedAccount, Events> no_retries(store(), events(), {}, {.max_conflict_retries = 0});
  EXPECT_THROW(no_retries.handle("account-ada", Withdraw{"ada", 10}), WrongExpectedVersion);
  EXPECT_EQ(accounts.load("account-ada").state.balance, 31);
}

TEST_P(RepositoryTest, TheSameCommandIdWritesOnceAndReturnsTheFirstResult) {
  AccountRepository accounts(store(), events());
  accounts.handle("account-ada", Open{"ada", "Ada"});
  accounts.handle("account-ada", Deposit{"ada", 100});
  const Uuid id = Uuid::v7();
  auto first = accounts.handle("account-ada", Withdraw{"ada", 70}, {.command_id = id});
  ASSERT_FALSE(first.rejected());
  EXPECT_FALSE(first.repeated);
  // Straight away, and after other commands (decided again now, it would be rejected).
  auto again = accounts.handle("account-ada", Withdraw{"ada", 70}, {.command_id = id});
  accounts.handle("account-ada", Deposit{"ada", 1});
  auto later = accounts.handle("account-ada", Withdraw{"ada", 70}, {.command_id = id});
  for (const auto& r : {again, later}) {
    EXPECT_TRUE(r.repeated);
    EXPECT_FALSE(r.rejected());
    EXPECT_EQ(r.stream_version, first.stream_version);
    EXPECT_EQ(r.position, first.position);
    EXPECT_EQ(r.events_written, 1u);
  }
  EXPECT_EQ(accounts.load("account-ada").state.balance, 31);
  EXPECT_EQ(store().stream_info("account-ada")->last_version, StreamVersion(4));
  // The ids derive from the command id, and keep its time order.
  auto stored = store().read_stream("account-ada").to_vector();
  EXPECT_EQ(stored[2].id, command_event_id(id, 0));
  EXPECT_EQ(stored[2].id.version(), 8);
  EXPECT_TRUE(std::equal(id.bytes().begin(), id.bytes().begin() + 6, stored[2].id.bytes().begin()));
}

TEST_P(RepositoryTest, ARepeatOlderThanTheSnapshotIsStillFound) {
  AccountRepository accounts(store(), events(), {}, {.snapshot_every = 2});
  accounts.handle("account-ada", Open{"ada", "Ada"});
  const Uuid deposit = Uuid::v7(), withdraw = Uuid::v7();
  auto d = accounts.handle("account-ada", Deposit{"ada", 100}, {.command_id = deposit});
  auto w = accounts.handle("account-ada", Withdraw{"ada", 80}, {.command_id = withdraw});
  for (int i = 0; i < 5; ++i) accounts.handle("account-ada", Deposit{"ada", 1});
  ASSERT_GT(accounts.load("account-ada").snapshot, w.stream_version);
  // Decided again, the deposit writes events (the store refuses their ids), the withdrawal is rejected
  // (the fold after the snapshot does not see it): both are found as repeats.
  auto d2 = accounts.handle("account-ada", Deposit{"ada", 100}, {.command_id = deposit});
  auto w2 = accounts.handle("account-ada", Withdraw{"ada", 80}, {.command_id = withdraw});
  EXPECT_TRUE(d2.repeated);
  EXPECT_EQ(d2.stream_version, d.stream_version);
  EXPECT_EQ(d2.position, d.position);
  EXPECT_TRUE(w2.repeated);
  EXPECT_FALSE(w2.rejected());
  EXPECT_EQ(w2.stream_version, w.stream_version);
  EXPECT_EQ(w2.position, w.position);
  EXPECT_EQ(accounts.load("account-ada").state.balance, 25);
}

TEST_P(RepositoryTest, ACommandIdReusedForAnotherStreamIsRefused) {
  AccountRepository accounts(store(), events());
  const Uuid id = Uuid::v7();
  accounts.handle("account-ada", Open{"ada", "Ada"}, {.command_id = id});
  EXPECT_THROW(accounts.handle("account-bob", Open{"bob", "Bob"}, {.command_id = id}), DuplicateEventId);
  EXPECT_FALSE(store().stream_info("account-bob"));
}

TEST_P(RepositoryTest, AnUnknownEventTypeFailsTheLoadUnlessSkipped) {
  AccountRepository strict(store(), events());
  AccountRepository lenient(store(), events(), {}, {.unknown_event_types = UnknownEventTypes::skip});
  strict.handle("account-ada", Open{"ada", "Ada"});
  store().append("account-ada", ExpectedVersion::any(), {testing::event("AccountAudited")});
  EXPECT_THROW(strict.load("account-ada"), UnknownEventType);
  auto loaded = lenient.load("account-ada");
  EXPECT_EQ(loaded.version, StreamVersion(2));
  EXPECT_EQ(loaded.state.owner, "Ada");
}

// Many tellers race withdrawals on one account, each with its own connection to the store (a SQLite
// file, a PostgreSQL schema). The memory engine is left out: its appends are so quick that the tellers
// often ran one after the other and never raced (seen in a landing run), so the test proved nothing there.
TEST_P(RepositoryTest, ManyThreadsRacingWithdrawalsNeverOverdrawAnAccount) {
  const auto location = harness_->location();
  if (!location) GTEST_SKIP() << "each teller needs its own connection to the store";
  constexpr long kBalance = 1000, kAmount = 7;
  constexpr int kThreads = 8, kTries = 40;  // 8 x 40 x 7 = 2240 wanted, 1000 there
  {
    AccountRepository accounts(store(), events());
    accounts.handle("account-ada", Open{"ada", "Ada"});
    accounts.handle("account-ada", Deposit{"ada", kBalance});
  }
  std::atomic<long> withdrawn{0}, conflicts{0};
  std::mutex failures_mu;
  std::vector<std::string> failures;
  std::vector<std::thread> tellers;
  for (int t = 0; t < kThreads; ++t) {
    tellers.emplace_back([&] {
      try {
        auto own = open_store(*location);
        AccountRepository accounts(*own, events(), {}, {.max_conflict_retries = 1000});
        for (int i = 0; i < kTries; ++i) {
          auto r = accounts.handle("account-ada", Withdraw{"ada", kAmount});
          if (!r.rejected()) withdrawn += kAmount;
          conflicts += r.attempts - 1;
        }
      } catch (const std::exception& e) {
        std::lock_guard lock(failures_mu);
        failures.push_back(e.what());
      }
    });
  }
  for (auto& t : tellers) t.join();
  ASSERT_TRUE(failures.empty()) << failures.front();
  auto loaded = AccountRepository(store(), events()).load("account-ada");
  EXPECT_GE(loaded.state.balance, 0);
  EXPECT_LT(loaded.state.balance, kAmount) << "a withdrawal that fitted was refused";
  EXPECT_EQ(loaded.state.balance, kBalance - withdrawn.load());
  EXPECT_GT(conflicts.load(), 0) << "the tellers never raced: the test proves nothing";
}

}  // namespace
}  // namespace sourced
