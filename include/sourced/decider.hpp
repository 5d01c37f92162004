#pragma once
// Deciders: a domain's behaviour as pure functions, with no I/O and no hidden state.
//
//   initial_state()          → the state before any event
//   decide(command, state)   → the events the command causes, or a Rejection (why not)
//   evolve(state, event)     → the state after the event; never fails for an event decide produced
//
// Write them as a small struct (static or const member functions, one decide overload per command):
//
//   struct Account {
//     using Event = std::variant<Opened, Deposited, Withdrawn>;   // the registry's Event
//     struct State { long balance = 0; bool open = false; };
//     static State initial_state() { return {}; }
//     static Decision<Event> decide(const Withdraw& c, const State& s) {
//       if (c.amount > s.balance) return Rejection{"insufficient funds"};
//       return Withdrawn{c.amount};
//     }
//     static State evolve(State s, const Event& e) {
//       std::visit(overloaded{[&](const Deposited& d) { s.balance += d.amount; }, ...}, e);
//       return s;
//     }
//   };
//
// or from three plain functions with make_decider<Event>(initial_state, decide, evolve). A decider may
// also declare `static constexpr int kSnapshotVersion`: the repository ignores snapshots taken with
// another version (change it when the State's stored shape changes).
//
// Everything here is a value type or a function; a decider is called from many threads at once, so it
// must not keep mutable state.

#include <concepts>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace sourced {

// A command the domain refuses, and why. Not an error: an expected outcome, returned, not thrown.
struct Rejection {
  std::string reason;
  friend bool operator==(const Rejection&, const Rejection&) = default;
};

// What decide() returns: the events a command causes (possibly none), or a Rejection. Converts from a
// Rejection, one event, or a vector of events.
template <class Event>
class Decision {
 public:
  Decision() = default;
  Decision(Rejection rejection) : outcome_(std::move(rejection)) {}     // NOLINT: implicit on purpose
  Decision(std::vector<Event> events) : outcome_(std::move(events)) {}  // NOLINT
  Decision(std::initializer_list<Event> events) : outcome_(std::vector<Event>(events)) {}
  template <class E>
  requires(std::constructible_from<Event, E&&> && !std::same_as<std::remove_cvref_t<E>, Rejection> &&
           !std::same_as<std::remove_cvref_t<E>, std::vector<Event>> && !std::same_as<std::remove_cvref_t<E>, Decision>)
      Decision(E&& event)
      : outcome_(std::vector<Event>{Event(std::forward<E>(event))}) {}  // NOLINT

  bool rejected() const { return std::holds_alternative<Rejection>(outcome_); }
  // Only when rejected().
  const Rejection& rejection() const { return std::get<Rejection>(outcome_); }
  // Empty when rejected().
  const std::vector<Event>& events() const {
    static const std::vector<Event> kNone;
    return rejected() ? kNone : std::get<std::vector<Event>>(outcome_);
  }
  std::vector<Event>&& take_events() && { return std::move(std::get<std::vector<Event>>(outcome_)); }

 private:
  std::variant<std::vector<Event>, Rejection> outcome_;
};

// Visits a variant with one lambda per alternative: std::visit(overloaded{[](const A&) {}, ...}, v).
template <class... Fs>
struct overloaded : Fs... {
  using Fs::operator()...;
};
template <class... Fs>
overloaded(Fs...) -> overloaded<Fs...>;

template <class D>
using StateOf = std::remove_cvref_t<decltype(std::declval<const D&>().initial_state())>;

// A type with initial_state() and evolve(state, event) over its Event.
template <class D>
concept Decider = requires {
  typename D::Event;
}
&&requires(const D& d) { d.initial_state(); }
&&requires(const D& d, const StateOf<D>& s, const typename D::Event& e) {
  { d.evolve(s, e) } -> std::convertible_to<StateOf<D>>;
};

// A decider that decides commands of type C.
template <class D, class C>
concept DeciderFor = Decider<D> && requires(const D& d, const C& c, const StateOf<D>& s) {
  { d.decide(c, s) } -> std::convertible_to<Decision<typename D::Event>>;
};

// The snapshot version of a decider's state (kSnapshotVersion, 1 when it declares none).
template <class D>
constexpr int snapshot_version_of() {
  if constexpr (requires { D::kSnapshotVersion; }) {
    return D::kSnapshotVersion;
  } else {
    return 1;
  }
}

// A decider made of three functions (any callables; decide may be overloaded for several commands).
template <class E, class Init, class Decide, class Evolve>
struct FunctionDecider {
  using Event = E;
  Init init;
  Decide decide_fn;
  Evolve evolve_fn;

  auto initial_state() const { return init(); }
  template <class C, class S>
  Decision<Event> decide(const C& command,
                         const S& state) const requires std::invocable<const Decide&, const C&, const S&> {
    return decide_fn(command, state);
  }
  template <class S>
  S evolve(const S& state, const Event& event) const {
    return evolve_fn(state, event);
  }
};

template <class Event, class Init, class Decide, class Evolve>
FunctionDecider<Event, Init, Decide, Evolve> make_decider(Init initial_state, Decide decide, Evolve evolve) {
  return {std::move(initial_state), std::move(decide), std::move(evolve)};
}

// The state after `events`, from `state`.
template <Decider D, class Events>
StateOf<D> fold(const D& decider, StateOf<D> state, const Events& events) {
  for (const auto& e : events) state = decider.evolve(state, e);
  return state;
}

}  // namespace sourced
