#include "sourced/command_bus.hpp"

#include <atomic>

#include <gtest/gtest.h>

#include "cqrs/bank_domain.hpp"
#include "sourced/memory_store.hpp"
#include "sourced/sqlite_store.hpp"
#include "store/engines.hpp"

namespace sourced {
namespace {

using namespace testing::bank;
using AccountRepository = Repository<Account, Events>;

struct Close {
  static constexpr std::string_view kCommandType = "CloseAccount";
  std::string account;
};

class CommandBusTest : public ::testing::Test {
 protected:
  CommandBusTest() : store_(open_memory_store()), accounts_(*store_, events()) {
    bus_.register_handler<Open>(accounts_).register_handler<Deposit>(accounts_).register_handler<Withdraw>(accounts_);
  }
  std::unique_ptr<EventStore> store_;
  AccountRepository accounts_;
  CommandBus bus_;
};

TEST_F(CommandBusTest, RoutesEachCommandTypeToItsHandlerAndTheStreamTheCommandNames) {
  bus_.dispatch(Open{"ada", "Ada"});
  auto r = bus_.dispatch(Deposit{"ada", 40});
  EXPECT_EQ(r.stream_version, StreamVersion(2));
  EXPECT_EQ(r.position, store_->head_position());
  EXPECT_EQ(accounts_.load("account-ada").state.balance, 40);
  EXPECT_TRUE(bus_.dispatch(Withdraw{"ada", 41}).rejected());
}

TEST_F(CommandBusTest, OneHandlerPerCommandType) {
  EXPECT_THROW(bus_.register_handler<Deposit>(accounts_), InvalidArgument);
  try {
    bus_.dispatch(Close{"ada"});
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("no handler"), std::string::npos) << e.what();
  }
}

TEST_F(CommandBusTest, AnyFunctionCanHandleACommand) {
  std::vector<std::string> closed;
  bus_.register_handler<Close>(
      [&](const Close& c, const CommandContext& ctx) {
        closed.push_back(ctx.stream);
        EXPECT_EQ(ctx.command_type, "CloseAccount");
        EXPECT_EQ(ctx.command<Close>(), &c);
        EXPECT_EQ(ctx.command<Open>(), nullptr);
        return CommandResult{};
      },
      [](const Close& c) { return "account-" + c.account; });
  bus_.dispatch(Close{"ada"});
  EXPECT_EQ(closed, std::vector<std::string>{"account-ada"});
}

TEST_F(CommandBusTest, AnInvalidCommandNamesTheFieldAndLoadsNothing) {
  std::atomic<int> handled{0};
  CommandBus bus;
  bus.register_handler<Withdraw>(
      [&](const Withdraw&, const CommandContext&) {
        ++handled;
        return CommandResult{};
      },
      [](const Withdraw& w) { return w.stream(); });
  try {
    bus.dispatch(Withdraw{"ada", -5});
    FAIL();
  } catch (const InvalidCommand& e) {
    EXPECT_EQ(e.field(), "amount");
    EXPECT_EQ(e.command_type(), "sourced::testing::bank::Withdraw");
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_STREQ(e.what(), "invalid sourced::testing::bank::Withdraw command: amount must be positive");
  }
  EXPECT_THROW(bus.dispatch(Withdraw{"", 5}), InvalidCommand);
  EXPECT_EQ(handled.load(), 0);
  bus.dispatch(Withdraw{"ada", 5});
  EXPECT_EQ(handled.load(), 1);
}

// Records what it sees; refuses commands for account "mallory".
class Recorder : public Middleware {
 public:
  Recorder(std::string name, std::vector<std::string>& log) : name_(std::move(name)), log_(log) {}
  void before(const CommandContext& ctx) override {
    log_.push_back(name_ + " before " + ctx.stream);
    if (ctx.stream == "account-mallory") throw InvalidArgument("not authorized");
  }
  void after(const CommandContext&, const CommandResult& r) override {
    log_.push_back(name_ + " after " + (r.rejected() ? "rejected" : std::to_string(r.stream_version.value())));
  }
  void on_failure(const CommandContext&, const std::exception& e) override {
    log_.push_back(name_ + " failed: " + e.what());
  }

 private:
  std::string name_;
  std::vector<std::string>& log_;
};

TEST_F(CommandBusTest, MiddlewareWrapsEveryDispatchInOrder) {
  std::vector<std::string> log;
  bus_.use(std::make_shared<Recorder>("outer", log)).use(std::make_shared<Recorder>("inner", log));
  bus_.dispatch(Open{"ada", "Ada"});
  EXPECT_EQ(log, (std::vector<std::string>{"outer before account-ada", "inner before account-ada", "inner after 1",
                                           "outer after 1"}));
  log.clear();
  bus_.dispatch(Withdraw{"ada", 5});
  EXPECT_EQ(log.back(), "outer after rejected");
  log.clear();
  EXPECT_THROW(bus_.dispatch(Deposit{"ada", 0}), InvalidCommand);
  EXPECT_EQ(log, (std::vector<std::string>{"outer before account-ada", "inner before account-ada",
                                           "inner failed: invalid sourced::testing::bank::Deposit command: amount "
                                           "must be positive",
                                           "outer failed: invalid sourced::testing::bank::Deposit command: amount "
                                           "must be positive"}));
  log.clear();
  EXPECT_THROW(bus_.dispatch(Open{"mallory", "M"}), InvalidArgument);
  EXPECT_EQ(log, (std::vector<std::string>{"outer before account-mallory", "outer failed: not authorized"}));
  EXPECT_FALSE(store_->stream_info("account-mallory"));
}

TEST_F(CommandBusTest, AnAfterHookThatThrowsDoesNotFailAWrittenCommand) {
  // Review 6, CB-1: a metrics exporter that is down. Were the dispatch to throw, a caller retrying a
  // command without an id would deposit twice.
  struct Exporter : Middleware {
    void after(const CommandContext&, const CommandResult&) override { throw std::runtime_error("exporter down"); }
  };
  std::vector<std::string> log;
  bus_.use(std::make_shared<Recorder>("outer", log)).use(std::make_shared<Exporter>());
  bus_.dispatch(Open{"ada", "Ada"});
  log.clear();
  CommandResult r;
  ASSERT_NO_THROW(r = bus_.dispatch(Deposit{"ada", 10}));
  EXPECT_EQ(r.events_written, 1u);
  EXPECT_EQ(r.middleware_errors, (std::vector<std::string>{"exporter down"}));
  EXPECT_EQ(log, (std::vector<std::string>{"outer before account-ada", "outer after 2"}))
      << "the other hooks still run, and on_failure does not";
  EXPECT_EQ(store_->read_stream("account-ada").to_vector().size(), 2u);
}

TEST_F(CommandBusTest, EventsCarryTheCorrelationAndTheCommandAsCause) {
  const Uuid command = Uuid::v7(), correlation = Uuid::v7();
  Uuid seen;
  struct Spy : Middleware {
    Uuid* seen;
    explicit Spy(Uuid* s) : seen(s) {}
    void before(const CommandContext& ctx) override { *seen = *ctx.meta.command_id; }
  };
  bus_.use(std::make_shared<Spy>(&seen));
  auto r = bus_.dispatch(Open{"ada", "Ada"}, {.command_id = command, .correlation_id = correlation});
  EXPECT_EQ(seen, command);
  EXPECT_EQ(r.command_id, command);
  auto e = store_->read_stream("account-ada").to_vector().at(0);
  EXPECT_EQ(e.correlation_id, correlation);
  EXPECT_EQ(e.causation_id, command);
  // A dispatch without ids gets a fresh command id, which is also its correlation id.
  auto fresh = bus_.dispatch(Deposit{"ada", 1});
  EXPECT_EQ(fresh.command_id, seen);
  EXPECT_EQ(fresh.correlation_id, fresh.command_id);
  EXPECT_EQ(store_->read_stream("account-ada").to_vector().at(1).causation_id, fresh.command_id);
}

TEST(CommandBusIdempotency, TheSameCommandIdWritesOnceAlsoAcrossARestart) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "bank.db").string();
  const Uuid open_id = Uuid::v7(), deposit_id = Uuid::v7();
  CommandResult first;
  {
    auto store = open_sqlite_store(path);
    AccountRepository accounts(*store, events());
    CommandBus bus;
    bus.register_handler<Open>(accounts).register_handler<Deposit>(accounts);
    bus.dispatch(Open{"ada", "Ada"}, {.command_id = open_id});
    first = bus.dispatch(Deposit{"ada", 10}, {.command_id = deposit_id});
    auto again = bus.dispatch(Deposit{"ada", 10}, {.command_id = deposit_id});
    EXPECT_TRUE(again.repeated);
    EXPECT_EQ(again.stream_version, first.stream_version);
    EXPECT_EQ(again.position, first.position);
  }
  auto store = open_sqlite_store(path);
  AccountRepository accounts(*store, events(), {}, {.snapshot_every = 1});
  CommandBus bus;
  bus.register_handler<Open>(accounts).register_handler<Deposit>(accounts);
  bus.dispatch(Deposit{"ada", 5});
  auto after_restart = bus.dispatch(Deposit{"ada", 10}, {.command_id = deposit_id});
  EXPECT_TRUE(after_restart.repeated);
  EXPECT_EQ(after_restart.stream_version, first.stream_version);
  EXPECT_EQ(after_restart.position, first.position);
  auto reopened = bus.dispatch(Open{"ada", "Ada"}, {.command_id = open_id});
  EXPECT_TRUE(reopened.repeated);
  EXPECT_FALSE(reopened.rejected());
  EXPECT_EQ(accounts.load("account-ada").state.balance, 15);
  EXPECT_EQ(store->stream_info("account-ada")->last_version, StreamVersion(3));
}

}  // namespace
}  // namespace sourced
