// The bank example's own domain, pinned with no store: the Account and Transfer deciders through
// given / when / then, and the transfer process manager's pure functions (route, handle, apply,
// on_rejected) walked through a transfer that completes and one whose credit is refused.

#include <string>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "domain.hpp"
#include "sourced/decider_testing.hpp"
#include "transfer.hpp"

namespace bank {
namespace {

using sourced::given;

TEST(BankAccount, OpensOnceAndTakesDepositsWhileOpen) {
  auto fresh = given(Account{});
  EXPECT_EQ(fresh.when(OpenAccount{"ada", "Ada"}), fresh.then({AccountOpened{"Ada"}}));
  EXPECT_EQ(fresh.when(Deposit{"ada", 10}), fresh.then_rejected("account ada does not exist"));
  auto open = given(Account{}, {AccountOpened{"Ada"}});
  EXPECT_EQ(open.when(OpenAccount{"ada", "Ada"}), open.then_rejected("account ada already exists"));
  EXPECT_EQ(open.when(Deposit{"ada", 10}), open.then({MoneyDeposited{10}}));
  EXPECT_EQ(open.state().owner, "Ada");
}

TEST(BankAccount, AWithdrawalOverTheBalanceIsRejectedWithTheBalance) {
  auto account = given(Account{}, {AccountOpened{"Ada"}, MoneyDeposited{100}, MoneyWithdrawn{30}});
  EXPECT_EQ(account.state().balance, 70);
  EXPECT_EQ(account.when(Withdraw{"ada", 70}), account.then({MoneyWithdrawn{70}}));
  EXPECT_EQ(account.when(Withdraw{"ada", 71}),
            account.then_rejected("account ada cannot withdraw 71: the balance is 70"));
}

TEST(BankAccount, ClosesOnlyWhenEmptyAndThenRefusesMoney) {
  auto funded = given(Account{}, {AccountOpened{"Ada"}, MoneyDeposited{5}});
  EXPECT_EQ(funded.when(CloseAccount{"ada"}),
            funded.then_rejected("account ada cannot be closed: the balance is 5, not 0"));
  auto empty = given(Account{}, {AccountOpened{"Ada"}, MoneyDeposited{5}, MoneyWithdrawn{5}});
  EXPECT_EQ(empty.when(CloseAccount{"ada"}), empty.then({AccountClosed{}}));
  auto closed = given(Account{}, {AccountOpened{"Ada"}, AccountClosed{}});
  EXPECT_EQ(closed.when(Deposit{"ada", 1}), closed.then_rejected("account ada is closed"));
  EXPECT_EQ(closed.when(Withdraw{"ada", 1}), closed.then_rejected("account ada is closed"));
  EXPECT_EQ(closed.when(CloseAccount{"ada"}), closed.then_rejected("account ada is closed"));
}

TEST(BankAccount, ADepositThatWouldOverflowTheBalanceIsRejected) {
  auto account = given(Account{}, {AccountOpened{"Ada"}, MoneyDeposited{kMaxAmount * 1000}});
  EXPECT_EQ(account.when(Deposit{"ada", 1}), account.then_rejected());
}

TEST(BankTransfer, MovesOnOnlyFromTheStageEachStepExpects) {
  const TransferRequested asked{"t1", "ada", "bob", 30};
  auto none = given(Transfer{});
  EXPECT_EQ(none.when(RequestTransfer{"t1", "ada", "bob", 30}), none.then({asked}));
  auto requested = given(Transfer{}, {asked});
  EXPECT_EQ(requested.when(RequestTransfer{"t1", "ada", "bob", 30}), requested.then_rejected("transfer t1 exists"));
  EXPECT_EQ(requested.when(CompleteTransfer{"t1"}), requested.then({TransferCompleted{}}));
  EXPECT_EQ(requested.when(RejectCredit{"t1", "closed"}), requested.then({TransferCreditRejected{"closed"}}));
  EXPECT_EQ(requested.when(CompensateTransfer{"t1"}), requested.then({})) << "nothing to compensate yet";
  auto rejected = given(Transfer{}, {asked, TransferCreditRejected{"closed"}});
  EXPECT_EQ(rejected.when(CompensateTransfer{"t1"}), rejected.then({TransferCompensated{}}));
  EXPECT_EQ(rejected.when(CompleteTransfer{"t1"}), rejected.then({}));
  auto done = given(Transfer{}, {asked, TransferCompleted{}});
  EXPECT_TRUE(Transfer::ended(done.state()));
  // A step repeated after the end (a redelivered command) writes nothing.
  EXPECT_EQ(done.when(CompleteTransfer{"t1"}), done.then({}));
  EXPECT_EQ(done.when(FailTransfer{"t1", "late"}), done.then({}));
}

// A command the process manager emits, as text, so the walk below compares whole lists.
std::string text(const TransferProcess::Command& c) {
  return std::visit(
      sourced::overloaded{[](const Withdraw& w) { return "withdraw " + w.account + " " + std::to_string(w.amount); },
                          [](const Deposit& d) { return "deposit " + d.account + " " + std::to_string(d.amount); },
                          [](const RejectCredit& r) { return "reject-credit " + r.transfer + ": " + r.reason; },
                          [](const CompleteTransfer& t) { return "complete " + t.transfer; },
                          [](const CompensateTransfer& t) { return "compensate " + t.transfer; },
                          [](const FailTransfer& t) { return "fail " + t.transfer + ": " + t.reason; }},
      c);
}
std::vector<std::string> text(const std::vector<TransferProcess::Command>& cs) {
  std::vector<std::string> out;
  for (const auto& c : cs) out.push_back(text(c));
  return out;
}
using Lines = std::vector<std::string>;

// Feeds one event as the runner does: the commands it emits, then the state after it.
Lines step(TransferProcess::State& s, const TransferProcess::Event& e) {
  auto commands = TransferProcess::handle(s, e);
  s = TransferProcess::apply(s, e);
  return text(commands);
}

TEST(BankTransferProcess, DebitsThenCreditsThenCompletes) {
  const TransferRequested asked{"t1", "ada", "bob", 30};
  EXPECT_EQ(TransferProcess::route(asked).action, sourced::ProcessRoute::start().action);
  EXPECT_EQ(TransferProcess::route(TransferCompleted{}).action, sourced::ProcessRoute::stop().action);
  auto s = TransferProcess::initial_state();
  EXPECT_EQ(step(s, asked), (Lines{"withdraw ada 30"}));
  EXPECT_EQ(step(s, MoneyWithdrawn{30}), (Lines{"deposit bob 30"}));
  EXPECT_EQ(s.stage, TransferProcess::Stage::debited);
  EXPECT_EQ(step(s, MoneyDeposited{30}), (Lines{"complete t1"}));
  EXPECT_EQ(s.stage, TransferProcess::Stage::credited);
  // A second money movement on the same correlation (a redelivery) emits nothing more.
  EXPECT_EQ(step(s, MoneyDeposited{30}), Lines{});
}

TEST(BankTransferProcess, ARefusedCreditIsRefundedAndCompensated) {
  auto s = TransferProcess::initial_state();
  step(s, TransferRequested{"t1", "ada", "bob", 30});
  step(s, MoneyWithdrawn{30});
  // The credit to bob is refused (bob closed): the transfer records it ...
  EXPECT_EQ(text(TransferProcess::on_rejected(s, Deposit{"bob", 30}, sourced::Rejection{"account bob is closed"})),
            (Lines{"reject-credit t1: account bob is closed"}));
  // ... and its event brings the refund, whose deposit completes the compensation.
  EXPECT_EQ(step(s, TransferCreditRejected{"account bob is closed"}), (Lines{"deposit ada 30"}));
  EXPECT_EQ(s.stage, TransferProcess::Stage::refunding);
  EXPECT_EQ(step(s, MoneyDeposited{30}), (Lines{"compensate t1"}));
  EXPECT_EQ(s.stage, TransferProcess::Stage::refunded);
}

TEST(BankTransferProcess, ARefusedDebitFailsTheTransferAndARefusedRefundIsLeftForAPerson) {
  auto s = TransferProcess::initial_state();
  step(s, TransferRequested{"t1", "ada", "bob", 30});
  EXPECT_EQ(text(TransferProcess::on_rejected(s, Withdraw{"ada", 30}, sourced::Rejection{"no funds"})),
            (Lines{"fail t1: no funds"}));
  auto refunding = TransferProcess::initial_state();
  step(refunding, TransferRequested{"t2", "ada", "bob", 30});
  step(refunding, MoneyWithdrawn{30});
  step(refunding, TransferCreditRejected{"account bob is closed"});
  EXPECT_EQ(
      text(TransferProcess::on_rejected(refunding, Deposit{"ada", 30}, sourced::Rejection{"account ada is closed"})),
      Lines{});
}

}  // namespace
}  // namespace bank
