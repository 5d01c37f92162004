#pragma once
// Given / when / then for deciders: "given these events, when this command, then these events (or this
// rejection)", with no store. Works with any test framework; with GoogleTest, compare outcomes with
// EXPECT_EQ, which prints both sides (events as JSON when they have to_json) on a mismatch:
//
//   auto account = given(Account{}, {Opened{"Ada"}, Deposited{100}});
//   EXPECT_EQ(account.when(Withdraw{70}), account.then({Withdrawn{70}}));
//   EXPECT_EQ(account.when(Withdraw{500}), account.then_rejected("insufficient funds"));
//   EXPECT_EQ(account.state().balance, 100);
//
// A Scenario is a value; it calls only the decider's pure functions.

#include <cstdlib>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include <cxxabi.h>
#include <nlohmann/json.hpp>

#include "sourced/decider.hpp"

namespace sourced {

// What a command did: the events it caused, or its rejection. Two outcomes are equal when they have the
// same events, or are both rejections with the same reason; a rejection expected with an empty reason
// (then_rejected()) equals any rejection.
template <class Event>
struct Outcome {
  std::vector<Event> events;
  std::optional<Rejection> rejection;

  friend bool operator==(const Outcome& a, const Outcome& b) {
    if (a.rejection || b.rejection) {
      if (!a.rejection || !b.rejection) return false;
      return a.rejection->reason.empty() || b.rejection->reason.empty() || a.rejection->reason == b.rejection->reason;
    }
    return a.events == b.events;
  }
  friend std::ostream& operator<<(std::ostream& os, const Outcome& o) {
    if (o.rejection) return os << "rejected: \"" << o.rejection->reason << '"';
    os << "events: [";
    for (std::size_t i = 0; i < o.events.size(); ++i) {
      if (i) os << ", ";
      std::visit([&](const auto& e) { describe(os, e); }, o.events[i]);
    }
    return os << ']';
  }

 private:
  template <class T>
  static void describe(std::ostream& os, const T& event) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(typeid(T).name(), nullptr, nullptr, &status),
                                                std::free);
    os << (status == 0 && name ? name.get() : typeid(T).name());
    if constexpr (requires { nlohmann::json(event); }) os << ' ' << nlohmann::json(event).dump();
  }
};

template <Decider D>
class Scenario {
 public:
  using Event = typename D::Event;
  using State = StateOf<D>;

  Scenario(D decider, std::vector<Event> history) : decider_(std::move(decider)), history_(std::move(history)) {}

  // The state after the given events (evolve runs on each).
  State state() const { return fold(decider_, decider_.initial_state(), history_); }

  // Decides `command` on the state after the given events.
  template <class C>
  requires DeciderFor<D, C> Outcome<Event> when(const C& command)
  const {
    Decision<Event> d = decider_.decide(command, state());
    if (d.rejected()) return {{}, d.rejection()};
    // evolve must accept what decide produced: fold it so a test catches an evolve that throws.
    (void)fold(decider_, state(), d.events());
    return {d.events(), std::nullopt};
  }

  // The outcomes to compare with.
  Outcome<Event> then(std::vector<Event> events) const { return {std::move(events), std::nullopt}; }
  Outcome<Event> then_rejected(std::string reason = {}) const { return {{}, Rejection{std::move(reason)}}; }

 private:
  D decider_;
  std::vector<Event> history_;
};

template <Decider D>
Scenario<D> given(D decider, std::vector<typename D::Event> history = {}) {
  return Scenario<D>(std::move(decider), std::move(history));
}

}  // namespace sourced
