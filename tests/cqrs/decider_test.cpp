#include "sourced/decider.hpp"

#include <sstream>

#include <gtest/gtest.h>

#include "cqrs/bank_domain.hpp"
#include "sourced/decider_testing.hpp"

namespace sourced {
namespace {

using namespace testing::bank;

TEST(Decider, GivenEventsWhenACommandThenItsEvents) {
  auto account = given(Account{}, {Opened{"Ada"}, Deposited{100}});
  EXPECT_EQ(account.state().balance, 100);
  EXPECT_EQ(account.when(Withdraw{"ada", 70}), account.then({Withdrawn{70}}));
  EXPECT_EQ(account.when(Deposit{"ada", 5}), account.then({Deposited{5}}));
}

TEST(Decider, GivenEventsWhenACommandThenItsRejection) {
  auto account = given(Account{}, {Opened{"Ada"}, Deposited{100}});
  EXPECT_EQ(account.when(Withdraw{"ada", 500}), account.then_rejected("insufficient funds"));
  EXPECT_EQ(account.when(Withdraw{"ada", 500}), account.then_rejected());
  EXPECT_EQ(given(Account{}).when(Deposit{"bob", 1}), account.then_rejected("account bob is not open"));
}

TEST(Decider, OutcomesThatDifferCompareUnequalAndPrintBothSides) {
  auto account = given(Account{}, {Opened{"Ada"}, Deposited{100}});
  EXPECT_NE(account.when(Withdraw{"ada", 70}), account.then({Withdrawn{71}}));
  EXPECT_NE(account.when(Withdraw{"ada", 70}), account.then({}));
  EXPECT_NE(account.when(Withdraw{"ada", 70}), account.then_rejected());
  EXPECT_NE(account.when(Withdraw{"ada", 500}), account.then_rejected("account closed"));
  std::ostringstream os;
  os << account.when(Withdraw{"ada", 70});
  EXPECT_EQ(os.str(), R"(events: [sourced::testing::bank::Withdrawn {"amount":70}])");
  std::ostringstream rejected;
  rejected << account.when(Withdraw{"ada", 500});
  EXPECT_EQ(rejected.str(), R"(rejected: "insufficient funds")");
}

// The same domain from three plain functions, with one generic decide.
struct Counter {
  int value = 0;
};
struct Incremented {
  int by = 0;
  friend bool operator==(const Incremented&, const Incremented&) = default;
};
struct Increment {
  int by = 0;
};

TEST(Decider, PlainFunctionsMakeADecider) {
  using Event = std::variant<Incremented>;
  auto counter = make_decider<Event>([] { return Counter{}; },
                                     [](const Increment& c, const Counter& s) -> Decision<Event> {
                                       if (s.value + c.by > 10) return Rejection{"over 10"};
                                       return Incremented{c.by};
                                     },
                                     [](Counter s, const Event& e) {
                                       s.value += std::get<Incremented>(e).by;
                                       return s;
                                     });
  static_assert(DeciderFor<decltype(counter), Increment>);
  static_assert(!DeciderFor<decltype(counter), Withdraw>);
  auto s = given(counter, {Incremented{4}, Incremented{5}});
  EXPECT_EQ(s.state().value, 9);
  EXPECT_EQ(s.when(Increment{1}), s.then({Incremented{1}}));
  EXPECT_EQ(s.when(Increment{2}), s.then_rejected("over 10"));
}

TEST(Decider, DecisionsConvertFromEventsAndRejections) {
  using Event = Account::Event;
  Decision<Event> none;
  EXPECT_FALSE(none.rejected());
  EXPECT_TRUE(none.events().empty());
  Decision<Event> two = {Opened{"x"}, Deposited{1}};
  EXPECT_EQ(two.events().size(), 2u);
  Decision<Event> no = Rejection{"why"};
  EXPECT_TRUE(no.rejected());
  EXPECT_EQ(no.rejection().reason, "why");
  EXPECT_TRUE(no.events().empty());
}

}  // namespace
}  // namespace sourced
