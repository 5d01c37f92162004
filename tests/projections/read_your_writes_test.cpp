// Read-your-writes through the command bus: a dispatch waits until named projections (real runners on
// every read-model store) have processed what the command wrote; on timeout the events stay written and
// the result says which projections were behind.

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "cqrs/bank_domain.hpp"
#include "projections/harness.hpp"
#include "sourced/command_bus.hpp"
#include "sourced/projection.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;
using namespace bank;

ProjectionRunnerOptions quiet() {
  ProjectionRunnerOptions o;
  o.progress = ProgressDisplay::none;
  o.log = [](std::string_view) {};
  return o;
}

template <class H>
class ReadYourWrites : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = h_.skip_reason()) GTEST_SKIP() << *why;
    accounts_ = std::make_unique<Repository<Account, Events>>(h_.events(), events());
    bus_.register_handler<Open>(*accounts_)
        .register_handler<Deposit>(*accounts_)
        .register_handler<Withdraw>(*accounts_);
  }

  // The harness's model (one row per stream, its last position among them) as the projection "balances",
  // its handler held while `hold_` is set.
  std::unique_ptr<ProjectionRunner> start_runner(ProjectionRunnerOptions o = quiet()) {
    auto p = h_.projection("balances", [this](const RecordedEvent&) {
      // Bounded, so a failed test cannot leave the runner's thread stuck here.
      for (int i = 0; hold_.load() && i < 10000; ++i) std::this_thread::sleep_for(1ms);
    });
    auto runner = std::make_unique<ProjectionRunner>(h_.events(), h_.models(), std::move(p), std::move(o));
    return runner;
  }

  // The last position the model has applied for `stream` (0 when it has no row).
  std::uint64_t model_last(const std::string& stream) {
    auto m = h_.model("balances");
    auto it = m.find(stream);
    if (it == m.end()) return 0;
    return std::stoull(it->second.substr(it->second.rfind('/') + 1));
  }

  H h_;
  std::unique_ptr<Repository<Account, Events>> accounts_;
  CommandBus bus_;
  std::atomic<bool> hold_{false};
};

#ifdef SOURCED_WITH_POSTGRES
using Stores = ::testing::Types<MemoryModels, SqliteModels, PostgresModels, SqliteModelsT<true>>;
#else
using Stores = ::testing::Types<MemoryModels, SqliteModels>;
#endif
TYPED_TEST_SUITE(ReadYourWrites, Stores, ModelStoreNames);

TYPED_TEST(ReadYourWrites, ADispatchThatWaitsSeesItsOwnEventsInTheModel) {
  auto runner = this->start_runner();
  this->bus_.register_projection("balances", runner->waiter());
  DispatchOptions wait{.wait_for = {"balances"}, .timeout = 10s};
  auto opened = this->bus_.dispatch(Open{"ada", "Ada"}, {}, wait);
  EXPECT_TRUE(opened.projections_caught_up());
  EXPECT_EQ(this->model_last("account-ada"), opened.position.value());
  for (int i = 1; i <= 20; ++i) {
    auto r = this->bus_.dispatch(Deposit{"ada", i}, {}, wait);
    ASSERT_TRUE(r.projections_caught_up()) << "deposit " << i;
    // Read right after the dispatch returns, with no wait of the test's own.
    ASSERT_EQ(this->model_last("account-ada"), r.position.value()) << "deposit " << i;
  }
}

TYPED_TEST(ReadYourWrites, OnTimeoutTheEventsStayWrittenAndTheResultNamesTheProjectionBehind) {
  auto runner = this->start_runner();
  this->bus_.register_projection("balances", runner->waiter());
  this->bus_.dispatch(Open{"bob", "Bob"}, {}, {.wait_for = {"balances"}, .timeout = 10s});
  this->hold_ = true;
  auto started = std::chrono::steady_clock::now();
  CommandResult r;
  ASSERT_NO_THROW(r = this->bus_.dispatch(Deposit{"bob", 5}, {}, {.wait_for = {"balances"}, .timeout = 200ms}));
  auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_FALSE(r.rejected());
  EXPECT_EQ(r.events_written, 1u);
  EXPECT_FALSE(r.projections_caught_up());
  EXPECT_EQ(r.projections_behind, std::vector<std::string>{"balances"});
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);
  // Written: the store has it, and the decider sees it.
  EXPECT_EQ(this->h_.events().head_position(), r.position);
  EXPECT_EQ(this->accounts_->load("account-bob").state.balance, 5);
  // Once the projection goes on, it reaches the command's position.
  this->hold_ = false;
  EXPECT_EQ(runner->wait_for(r.position, 10s), WaitResult::reached);
  EXPECT_EQ(this->model_last("account-bob"), r.position.value());
}

TYPED_TEST(ReadYourWrites, AStoppedRunnerIsBehindAtOnceAndTheTimeoutCoversEveryProjection) {
  auto runner = this->start_runner();
  this->bus_.register_projection("balances", runner->waiter());
  // A projection that never reaches anything: its waiter takes whatever time is left.
  std::atomic<int> slow_calls{0};
  std::chrono::milliseconds given{-1};
  this->bus_.register_projection("slow", [&](Position, std::chrono::milliseconds timeout) {
    ++slow_calls;
    given = timeout;
    std::this_thread::sleep_for(timeout);
    return false;
  });
  this->bus_.register_projection(
      "throws", [](Position, std::chrono::milliseconds) -> bool { throw std::runtime_error("waiter broken"); });
  auto r = this->bus_.dispatch(Open{"cy", "Cy"}, {}, {.wait_for = {"balances", "slow", "throws"}, .timeout = 2s});
  EXPECT_EQ(r.projections_behind, (std::vector<std::string>{"slow", "throws"}));
  EXPECT_EQ(slow_calls.load(), 1);
  EXPECT_LE(given, 2s);  // what balances left of the shared budget (2 s: it must catch up under load)
  runner->stop();
  auto started = std::chrono::steady_clock::now();
  r = this->bus_.dispatch(Deposit{"cy", 1}, {}, {.wait_for = {"balances"}, .timeout = 10s});
  EXPECT_EQ(r.projections_behind, std::vector<std::string>{"balances"});
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_EQ(this->accounts_->load("account-cy").state.balance, 1);
}

TYPED_TEST(ReadYourWrites, NothingIsWaitedForWhenNothingWasWrittenAndAnUnknownNameIsRefusedBeforeHandling) {
  auto runner = this->start_runner();
  this->bus_.register_projection("balances", runner->waiter());
  this->hold_ = true;  // a wait would time out
  auto rejected = this->bus_.dispatch(Deposit{"nobody", 5}, {}, {.wait_for = {"balances"}, .timeout = 5s});
  EXPECT_TRUE(rejected.rejected());
  EXPECT_TRUE(rejected.projections_caught_up());
  auto head = this->h_.events().head_position();
  try {
    this->bus_.dispatch(Open{"dee", "Dee"}, {}, {.wait_for = {"balance"}});
    FAIL() << "an unknown projection name was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'balance'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(this->h_.events().head_position(), head);
  EXPECT_THROW(this->bus_.register_projection("balances", runner->waiter()), InvalidArgument);
  EXPECT_THROW(this->bus_.register_projection("", runner->waiter()), InvalidArgument);
  this->hold_ = false;
}

TYPED_TEST(ReadYourWrites, ARepeatedCommandWaitsForItsFirstHandling) {
  auto runner = this->start_runner();
  this->bus_.register_projection("balances", runner->waiter());
  CommandMeta meta{.command_id = Uuid::v7()};
  this->bus_.dispatch(Open{"eve", "Eve"}, {}, {.wait_for = {"balances"}, .timeout = 10s});
  auto first = this->bus_.dispatch(Deposit{"eve", 3}, meta, {.wait_for = {"balances"}, .timeout = 10s});
  auto again = this->bus_.dispatch(Deposit{"eve", 3}, meta, {.wait_for = {"balances"}, .timeout = 10s});
  EXPECT_TRUE(again.repeated);
  EXPECT_EQ(again.position, first.position);
  EXPECT_TRUE(again.projections_caught_up());
}

}  // namespace
}  // namespace sourced::testing
