#pragma once
// sourced::ProcessManager: a saga. It reacts to events with commands, keeping one state per running
// instance (a transfer, an order), as a Commanded process manager does:
//
//   struct TransferProcess {
//     using Event = TransferEvents::Event;            // the registry's std::variant: what it reads
//     using Command = std::variant<Withdraw, Deposit, CompleteTransfer, FailTransfer>;
//     struct State { ... };                            // with to_json/from_json (it is persisted)
//     static State initial_state();
//     // Which instance an event belongs to, and whether it starts, continues or stops it. No key: the
//     // event's correlation id (the conversation a command began).
//     static ProcessRoute route(const Event& e);       // or route(const Event&, const RecordedEvent&)
//     // The commands an event causes, from the state before it; then apply() folds it in.
//     static std::vector<Command> handle(const State& s, const Event& e);
//     static State apply(State s, const Event& e);
//     // Optional: a command the domain rejected. Returns the compensating commands (none: give up).
//     static std::vector<Command> on_rejected(const State& s, const Command& c, const Rejection& r);
//   };
//
//   ProcessManager transfers(*store, transfer_events, bus, "transfers", TransferProcess{});
//   transfers.create_subscription();                     // once; no-op when it exists
//   ProcessManagerRunner runner(transfers);              // its own thread, until stop()
//   transfers.run_until_stopped(key, 10s);               // or in this thread, until an instance stops
//
// For each event (in `$all` order, through the persistent subscription named after the process
// manager): route it; for a start, continue or stop load the instance; skip the event when the instance
// has handled it already (its position is at or before the instance's); run handle() and apply();
// dispatch the commands in order through the bus; for a rejected one call on_rejected() and dispatch its
// commands after the others; save the new state; only then is the event acknowledged. A stop saves a
// "stopped" record instead: the state is gone, a later continue is ignored, a later start begins afresh.
//
// Exactly once in effect: the i-th command an event causes has the id Uuid::v5(name, event id, i)
// (process_command_id), so when a crash makes the subscription deliver the event again, the repository
// finds the command's events and writes nothing (see repository.hpp). Rejections write nothing to the
// store, so each is recorded in the instance's stream before its compensation is dispatched: a
// redelivery reuses the recorded rejection instead of deciding the command again. docs/cqrs.md, "Process
// managers", goes through a crash at each step.
//
// Instance state: records in a stream per instance, `<stream_prefix><name>-<key>` (default
// `process-transfers-<key>`): "$process-state" (the state as JSON, the position and id of the event it
// includes), "$process-rejected" (a command of the event in progress the domain refused) and
// "$process-stopped". Loading reads the stream backward to the latest state or stopped record.
//
// Thread-safety: handle(), instance() and stopped() may be called from several threads, but an event
// must be handled by one thread at a time and events of one instance in order: that is what the
// persistent subscription's single consumer (its lease) provides. The store, registry and bus must
// outlive the process manager.
//
// Order: "at or before the instance's position" means "handled" only if no event can overtake another,
// so the runners consume with at most one event in flight (PersistentConsumerOptions::max_in_flight =
// 1, whatever the subscription was created with): an event that fails blocks the ones after it until
// its retry succeeds or it is parked. A parked event that is replayed after its instance handled later
// events would be applied out of order: handle() refuses it (ProcessEventOutOfOrder) and the runners
// park it again at once, with that error.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "sourced/command.hpp"
#include "sourced/command_bus.hpp"
#include "sourced/decider.hpp"
#include "sourced/error.hpp"
#include "sourced/event.hpp"
#include "sourced/persistent_subscription.hpp"
#include "sourced/serializer.hpp"
#include "sourced/store.hpp"
#include "sourced/typed_events.hpp"

namespace sourced {

// What a process manager does with an event: which instance (by key) it goes to, and whether it starts,
// continues or stops it. A value type.
struct ProcessRoute {
  enum class Action {
    ignore,   // not for this process manager
    start,    // begins the instance (from initial_state()), or continues it when it is running
    proceed,  // continues a running instance; ignored when there is none (Commanded's :continue)
    stop,     // ends a running instance (the event is not handled): its state is gone
  };
  Action action = Action::ignore;
  // Empty: the event's correlation id (its own id when it has none).
  std::optional<std::string> key;

  static ProcessRoute ignore() { return {}; }
  static ProcessRoute start(std::optional<std::string> key = std::nullopt) { return {Action::start, std::move(key)}; }
  static ProcessRoute proceed(std::optional<std::string> key = std::nullopt) {
    return {Action::proceed, std::move(key)};
  }
  static ProcessRoute stop(std::optional<std::string> key = std::nullopt) { return {Action::stop, std::move(key)}; }
};

template <class P>
using ProcessStateOf = std::remove_cvref_t<decltype(std::declval<const P&>().initial_state())>;

// A process manager definition (see the top of this header).
template <class P>
concept ProcessDefinition = requires(const P& p, ProcessStateOf<P> s, const typename P::Event& e) {
  typename P::Event;
  typename P::Command;
  { p.handle(std::as_const(s), e) } -> std::convertible_to<std::vector<typename P::Command>>;
  { p.apply(std::move(s), e) } -> std::convertible_to<ProcessStateOf<P>>;
}
&&(
    requires(const P& p, const typename P::Event& e) {
      { p.route(e) } -> std::convertible_to<ProcessRoute>;
    } ||
    requires(const P& p, const typename P::Event& e, const RecordedEvent& r) {
      { p.route(e, r) } -> std::convertible_to<ProcessRoute>;
    });

struct ProcessManagerOptions {
  // Instances of process manager N keep their records in the streams `stream_prefix + N + "-" + key`.
  std::string stream_prefix = "process-";
  // The subscription create_subscription() makes: filter (default: the registry's event types, so the
  // engine skips everything else) and start (default: the first event, as Commanded's :origin).
  std::optional<EventFilter> filter;
  SubscriptionStart start = SubscriptionStart::origin();
  // No max_in_flight: a process manager handles one event at a time (see "Order" above); its
  // subscription is created with 1 and consumed with 1.
  // Deliveries of an event that keeps failing (a store error, a command that fails validation) before
  // it is parked; parked events show in `sourced subscription parked` and can be replayed.
  std::uint32_t max_attempts = 10;
  // How the runners consume the subscription. Default: wait for the lease (another process may hold it).
  PersistentConsumerOptions consumer{.wait_for_lease = true};
  // More commands than this for one event (a compensation that is itself rejected, over and over) is a
  // definition error: the event fails (and is parked after max_attempts).
  std::size_t max_commands_per_event = 100;
};

// A replayed (parked) event that its instance has moved past: the instance handled later events while
// this one was parked, so applying it now would apply it out of order. The runners park it again.
class ProcessEventOutOfOrder : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

// What handling one event did.
struct ProcessStep {
  ProcessRoute::Action action = ProcessRoute::Action::ignore;
  std::string key;  // the instance (empty when ignored)
  // True when nothing was done: the route said ignore, a proceed or stop found no running instance, or
  // the instance had handled the event already (a redelivery).
  bool skipped = true;
  bool started = false;        // a new instance began with this event
  bool stopped = false;        // the instance ended with this event
  std::uint64_t commands = 0;  // dispatched (repeats included)
  std::uint64_t repeated = 0;  // of those, found already written (a redelivery after a crash)
  std::uint64_t rejected = 0;  // refused by the domain (rejections recorded earlier included)
};

// The instance loaded from its stream: exposed for tools and tests.
struct ProcessInstanceRecord {
  bool running = false;   // has a state, not stopped
  bool stopped = false;   // the latest record is a stop
  std::string state;      // the state as JSON (running only)
  Position position;      // of the last event the instance handled (started, continued or stopped by)
  StreamVersion version;  // of the stream's last record (0: no stream)
  // Rejections recorded after the latest state: the event in progress when a crash came.
  struct RejectedCommand {
    Uuid event_id;
    std::uint64_t index = 0;
    std::string reason;
  };
  std::vector<RejectedCommand> rejections;
};

// The id of the `index`-th command that process manager `name` dispatches for the event `event_id`:
// Uuid::v5 over the three, the same in every process and after every restart.
Uuid process_command_id(std::string_view name, const Uuid& event_id, std::uint64_t index);

namespace detail {
// Checks a process manager's name (a subscription name; no '-' so the instance streams' category is the
// prefix) and returns the subscription settings from the options.
void check_process_manager_name(std::string_view name);
ProcessInstanceRecord load_process_instance(EventStore& store, const std::string& stream);
// Appends one record to an instance stream at `expected` (the loaded version); ids derive from the event
// so that a repeat is the store's idempotent append.
StreamVersion save_process_state(EventStore& store, const std::string& stream, StreamVersion expected,
                                 const std::string& state, const RecordedEvent& event);
StreamVersion save_process_stopped(EventStore& store, const std::string& stream, StreamVersion expected,
                                   const RecordedEvent& event);
StreamVersion save_process_rejection(EventStore& store, const std::string& stream, StreamVersion expected,
                                     const RecordedEvent& event, std::uint64_t index, std::string_view command_type,
                                     const Rejection& rejection);
void create_process_subscription(EventStore& store, std::string_view name, const ProcessManagerOptions& options,
                                 std::vector<std::string> event_types);
// Throws SubscriptionNotFound, or InvalidArgument when the existing subscription `name` does not deliver
// every event the process manager reads now (see ProcessManager::check_subscription).
void check_process_subscription(EventStore& store, std::string_view name, const ProcessManagerOptions& options,
                                const std::vector<std::string>& event_types);
std::string process_event_out_of_order(std::string_view name, std::string_view key, const RecordedEvent& event,
                                       Position instance_position);
// What a process manager's consumer uses: `options` with one event in flight.
PersistentConsumerOptions process_consumer_options(PersistentConsumerOptions options);
// Hands one delivery to `handle` and settles it: ack when it returns, park at once for
// ProcessEventOutOfOrder (retrying cannot cure it), nack (retry, parked after max_attempts) otherwise.
// True when it was acked.
bool settle_process_delivery(PersistentSubscription& sub, const PersistentDelivery& d,
                             const std::function<void(const PersistentDelivery&)>& handle);
// Consumes the subscription in the calling thread, handing each delivery to `handle` and settling it
// (settle_process_delivery), until `done()` is true (checked first and after each event),
// no event came for `idle` (when set), `timeout` passed or `stop` was requested. True when done() was.
bool run_process_loop(EventStore& store, const std::string& name, const PersistentConsumerOptions& options,
                      const std::function<void(const PersistentDelivery&)>& handle, const std::function<bool()>& done,
                      std::optional<std::chrono::milliseconds> idle, std::chrono::milliseconds timeout,
                      std::stop_token stop, std::uint64_t* handled);
}  // namespace detail

template <ProcessDefinition P, class Registry>
class ProcessManager {
 public:
  using Event = typename P::Event;
  using Command = typename P::Command;
  using State = ProcessStateOf<P>;
  static_assert(std::same_as<Event, typename Registry::Event>,
                "the definition's Event must be the registry's Event (std::variant of the registered types)");

  // Throws InvalidArgument for a bad name (see create_persistent_subscription; no '-' either, see
  // check_process_manager_name) or options.
  ProcessManager(EventStore& store, const Registry& registry, const CommandBus& bus, std::string name,
                 P definition = {}, ProcessManagerOptions options = {})
      : store_(store),
        registry_(registry),
        bus_(bus),
        name_(std::move(name)),
        definition_(std::move(definition)),
        options_(std::move(options)) {
    detail::check_process_manager_name(name_);
    if (options_.max_commands_per_event == 0) throw InvalidArgument("max_commands_per_event must be positive");
  }

  EventStore& store() const { return store_; }
  const std::string& name() const { return name_; }
  const ProcessManagerOptions& options() const { return options_; }
  const P& definition() const { return definition_; }
  std::string instance_stream(std::string_view key) const {
    return options_.stream_prefix + name_ + "-" + std::string(key);
  }

  // Creates the persistent subscription `name()` (see ProcessManagerOptions); false when it exists, after
  // check_subscription().
  bool create_subscription() const {
    if (persistent_subscription_info(store_, name_)) {
      check_subscription();
      return false;
    }
    try {
      detail::create_process_subscription(store_, name_, options_, event_types());
    } catch (const SubscriptionExists&) {
      check_subscription();  // another process made it first
      return false;
    }
    return true;
  }
  // Checks that the existing subscription delivers every event this process manager reads now: its
  // filter was fixed at creation, so a type added to the registry since (a new route) would never
  // arrive and its instances would wait forever. Throws InvalidArgument naming the missing types (or
  // the filters), SubscriptionNotFound when there is none. A wider filter is fine (route() and the
  // registry ignore the rest). The runners and run_until*() call it before consuming.
  void check_subscription() const { detail::check_process_subscription(store_, name_, options_, event_types()); }

  // The state of the running instance `key`; nullopt when it never started or has stopped.
  std::optional<State> instance(std::string_view key) const {
    ProcessInstanceRecord r = detail::load_process_instance(store_, instance_stream(key));
    if (!r.running) return std::nullopt;
    return JsonSerializer::deserialize<State>(r.state);
  }
  // True once the instance `key` has stopped (and not started again).
  bool stopped(std::string_view key) const {
    return detail::load_process_instance(store_, instance_stream(key)).stopped;
  }

  // Handles one event (see the top of this header): what the runners call for each delivery. Throws what
  // dispatching or the store throws; handling the event again then is safe. `replay`: the event was
  // parked and is delivered again on request (PersistentDelivery::replay); throws ProcessEventOutOfOrder
  // when its instance has handled a later event since.
  ProcessStep handle(const RecordedEvent& recorded, bool replay = false) const {
    ProcessStep step;
    std::optional<Event> event = registry_.decode(recorded, UnknownEventTypes::skip);
    if (!event) return step;
    ProcessRoute route = route_of(*event, recorded);
    step.action = route.action;
    if (route.action == ProcessRoute::Action::ignore) return step;
    step.key = route.key ? *route.key : recorded.correlation_id.value_or(recorded.id).to_string();
    if (step.key.empty()) {
      throw InvalidArgument("process manager " + name_ + " routed event " + recorded.id.to_string() + " (stream " +
                            recorded.stream + ", version " + std::to_string(recorded.version.value()) +
                            ") to an empty instance key");
    }
    const std::string stream = instance_stream(step.key);
    ProcessInstanceRecord instance = detail::load_process_instance(store_, stream);
    if (replay && instance.position.value() > recorded.position.value()) {
      throw ProcessEventOutOfOrder(detail::process_event_out_of_order(name_, step.key, recorded, instance.position));
    }
    if (instance.position.value() >= recorded.position.value()) return step;  // handled before
    if (route.action == ProcessRoute::Action::stop) {
      if (!instance.running) return step;
      detail::save_process_stopped(store_, stream, instance.version, recorded);
      step.skipped = false;
      step.stopped = true;
      return step;
    }
    if (!instance.running && route.action == ProcessRoute::Action::proceed) return step;
    step.skipped = false;
    step.started = !instance.running;
    State state = instance.running ? JsonSerializer::deserialize<State>(instance.state) : definition_.initial_state();
    std::vector<Command> commands = definition_.handle(std::as_const(state), *event);
    state = definition_.apply(std::move(state), *event);

    CommandMeta meta;
    meta.correlation_id = recorded.correlation_id.value_or(recorded.id);
    meta.causation_id = recorded.id;
    StreamVersion version = instance.version;
    // Commands are dispatched in order; compensations go after those already queued, so a compensation
    // never overtakes a command handle() asked for first.
    for (std::size_t i = 0; i < commands.size(); ++i) {
      if (i >= options_.max_commands_per_event) {
        throw InvalidArgument("process manager " + name_ + ", instance " + step.key + ": more than " +
                              std::to_string(options_.max_commands_per_event) + " commands for event " +
                              recorded.id.to_string() + " (a compensation rejected over and over?)");
      }
      const Command command = commands[i];  // a copy: push_back below may move the vector
      std::optional<Rejection> rejection = recorded_rejection(instance, recorded.id, i);
      ++step.commands;
      if (!rejection) {
        meta.command_id = process_command_id(name_, recorded.id, i);
        CommandResult result = std::visit([&](const auto& c) { return bus_.dispatch(c, meta); }, command);
        if (result.repeated) ++step.repeated;
        if (result.rejected()) {
          rejection = result.rejection;
          version = detail::save_process_rejection(store_, stream, version, recorded, i, command_type_of(command),
                                                   *rejection);
        }
      }
      if (rejection) {
        ++step.rejected;
        if constexpr (requires { definition_.on_rejected(std::as_const(state), command, *rejection); }) {
          std::vector<Command> more = definition_.on_rejected(std::as_const(state), command, *rejection);
          for (auto& c : more) commands.push_back(std::move(c));
        }
      }
    }
    detail::save_process_state(store_, stream, version, JsonSerializer::serialize(state), recorded);
    return step;
  }

  // Consumes the subscription in this thread until `done()` returns true (checked first and after each
  // event), `timeout` passes or `stop` is requested; true when done() did. When another consumer holds
  // the subscription's lease it waits for it (options().consumer.wait_for_lease; within `timeout`, not
  // lease_timeout), checking done() every 100 ms: true as soon as the holder has done the work. The
  // subscription must exist.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout, std::stop_token stop = {}) {
    check_subscription();
    return detail::run_process_loop(
        store_, name_, options_.consumer, [this](const PersistentDelivery& d) { handle(*d.event, d.replay); }, done,
        std::nullopt, timeout, stop, nullptr);
  }
  // run_until() the instance `key` has stopped: what a caller that started an instance (a transfer) and
  // wants to see it through uses.
  bool run_until_stopped(std::string_view key, std::chrono::milliseconds timeout, std::stop_token stop = {}) {
    std::string k(key);
    return run_until([this, k] { return stopped(k); }, timeout, stop);
  }
  // Consumes until no event has come for `idle` (or `timeout` passed); returns how many were delivered.
  std::uint64_t run_until_idle(std::chrono::milliseconds idle, std::chrono::milliseconds timeout,
                               std::stop_token stop = {}) {
    std::uint64_t handled = 0;
    check_subscription();
    detail::run_process_loop(
        store_, name_, options_.consumer, [this](const PersistentDelivery& d) { handle(*d.event, d.replay); },
        [] { return false; }, idle, timeout, stop, &handled);
    return handled;
  }

 private:
  ProcessRoute route_of(const Event& event, const RecordedEvent& recorded) const {
    if constexpr (requires { definition_.route(event, recorded); }) {
      return definition_.route(event, recorded);
    } else {
      return definition_.route(event);
    }
  }
  static std::optional<Rejection> recorded_rejection(const ProcessInstanceRecord& instance, const Uuid& event_id,
                                                     std::uint64_t index) {
    for (const auto& r : instance.rejections) {
      if (r.event_id == event_id && r.index == index) return Rejection{r.reason};
    }
    return std::nullopt;
  }
  static std::string command_type_of(const Command& command) {
    return std::visit([](const auto& c) { return CommandBus::command_type_name<std::remove_cvref_t<decltype(c)>>(); },
                      command);
  }
  std::vector<std::string> event_types() const {
    return [this]<std::size_t... I>(std::index_sequence<I...>) {
      return std::vector<std::string>{registry_.template type_name<std::variant_alternative_t<I, Event>>()...};
    }
    (std::make_index_sequence<std::variant_size_v<Event>>{});
  }

  EventStore& store_;
  const Registry& registry_;
  const CommandBus& bus_;
  std::string name_;
  P definition_;
  ProcessManagerOptions options_;
};

// Runs a process manager on its own thread through its persistent subscription, until stop(): each
// delivery is handled (ProcessManager::handle) and acked when that returns; an exception nacks it (a
// retry after a back-off, parked after max_attempts; ProcessEventOutOfOrder parks it at once). One
// event in flight (see "Order" at the top). With options().consumer.wait_for_lease (the default) the
// runner takes the lease on its thread and waits for it without limit (lease_timeout does not apply): a
// standby in another process takes over whenever the holder dies or stops, and stop() ends the wait.
// Without it, the constructor throws SubscriptionLocked when another consumer holds the lease.
// Thread-safety: stop(), running() and error() from any thread. The process manager must outlive the
// runner.
class ProcessManagerRunner {
 public:
  template <class PM>
  requires requires(PM& pm, const RecordedEvent& e) {
    pm.handle(e, true);
    pm.check_subscription();
  }
  explicit ProcessManagerRunner(PM& pm)
      : ProcessManagerRunner(checked(pm).store(), pm.name(), pm.options().consumer,
                             [&pm](const PersistentDelivery& d) { pm.handle(*d.event, d.replay); }) {}
  ProcessManagerRunner(EventStore& store, std::string name, PersistentConsumerOptions options,
                       std::function<void(const PersistentDelivery&)> handle);
  ProcessManagerRunner(const ProcessManagerRunner&) = delete;
  ProcessManagerRunner& operator=(const ProcessManagerRunner&) = delete;
  ~ProcessManagerRunner();

  // Returns once no handle() call runs or will run; progress is saved and the lease released.
  void stop();
  bool running() const;
  // What stopped the runner (a store error, a deleted subscription); null while it runs.
  std::exception_ptr error() const;

 private:
  // Checks the subscription before the delegated constructor opens it.
  template <class PM>
  static PM& checked(PM& pm) {
    pm.check_subscription();
    return pm;
  }
  struct State;
  std::shared_ptr<State> state_;
  std::jthread thread_;
};

}  // namespace sourced
