#pragma once
// sourced::CommandBus: routes each command type to its one handler (usually a Repository), with a
// middleware chain around it.
//
//   CommandBus bus;
//   bus.register_handler<Withdraw>(accounts);                // the stream comes from Withdraw::stream()
//   bus.register_handler<Open>(accounts, [](const Open& c) { return "account-" + c.id; });
//   bus.use(std::make_shared<Logging>());
//   CommandResult r = bus.dispatch(Withdraw{"42", 70}, {.command_id = id_from_the_client});
//
// dispatch() runs, in order: every middleware's before() (registration order; one may throw to refuse
// the command, e.g. authorization), the command's own validate() (InvalidCommand names the field;
// nothing is loaded), the handler, then every after() in reverse order. When anything throws, every
// middleware whose before() ran gets on_failure() (reverse order) and the exception goes on to the
// caller. A domain rejection is not a failure: it is in the result that after() sees. An after() that
// throws does not fail the dispatch (the events are written): the other after() hooks still run and
// its message is in CommandResult::middleware_errors.
//
// Ids: each dispatch has a command id (the caller's, or a fresh UUIDv7) and a correlation id (the
// caller's, or the command id); the events written carry the correlation id, and the command id as
// their causation id. A command id given by the caller makes the command idempotent (see Repository).
//
// Read-your-writes: the bus can wait, after a command, until named projections have processed what it
// wrote. The projections layer is a sibling of this one, so the bus knows a projection only by a name and
// a waiter (a ProjectionRunner gives one: runner.waiter()):
//
//   bus.register_projection("balances", balances_runner.waiter());
//   auto r = bus.dispatch(Deposit{"42", 10}, {}, {.wait_for = {"balances"}, .timeout = 2s});
//   if (!r.projections_caught_up()) ...   // the deposit is written; the balance may not show it yet
//
// A timeout is not a failure: the events stay written, and the result lists the projections that were
// behind (CommandResult::projections_behind).
//
// Thread-safety: register handlers, projections and middleware before the first dispatch; dispatch() may then be
// called from many threads at once (middleware must allow that). The handlers' repositories must outlive
// the bus.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <typeindex>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sourced/command.hpp"
#include "sourced/repository.hpp"

namespace sourced {

// One dispatch, as middleware sees it.
struct CommandContext {
  std::string command_type;  // the command's kCommandType, or its C++ type name
  std::string stream;        // the stream it targets
  CommandMeta meta;          // command id and correlation id always set
  // The command, when it is a C.
  template <class C>
  const C* command() const {
    return type == typeid(C) ? static_cast<const C*>(command_ptr) : nullptr;
  }
  std::type_index type = typeid(void);
  const void* command_ptr = nullptr;
};

// Cross-cutting steps around every dispatch: logging, metrics, authorization. Called from the
// dispatching thread; implementations shared by many threads must synchronise themselves.
class Middleware {
 public:
  virtual ~Middleware() = default;
  // Before validation and handling; throwing stops the command.
  virtual void before(const CommandContext&) {}
  // After the handler returned (rejections included). Throwing does not fail the command, which is
  // written: the message goes to CommandResult::middleware_errors.
  virtual void after(const CommandContext&, const CommandResult&) {}
  // When validation, the handler, or a middleware threw; the exception then reaches the caller.
  virtual void on_failure(const CommandContext&, const std::exception&) {}
};

// Blocks until a projection has processed `position` or `timeout` passes; true when it has. Called from
// dispatching threads, many at once. A waiter that throws counts as not reached.
using ProjectionWaiter = std::function<bool(Position position, std::chrono::milliseconds timeout)>;

// How one dispatch ends. A value type.
struct DispatchOptions {
  // Projections (registered with CommandBus::register_projection) to wait for after the command, until
  // each has processed the command's last event (CommandResult::position). Nothing is waited for when the
  // command wrote nothing; a repeated command waits for the position of its first handling.
  std::vector<std::string> wait_for;
  // For all of them together, from when the handler returned.
  std::chrono::milliseconds timeout{5000};
};

namespace detail {
// The demangled name of a C++ type (std::type_info::name()).
std::string type_name_of(const char* mangled);
}  // namespace detail

class CommandBus {
 public:
  // A handler: gets the command and its context (stream and ids set), returns what it did.
  template <class C>
  using Handler = std::function<CommandResult(const C&, const CommandContext&)>;

  // Routes C to `handler`, targeting the stream `stream_of(command)`. Throws InvalidArgument when C has
  // a handler already.
  template <class C, class StreamOf>
  CommandBus& register_handler(Handler<C> handler, StreamOf stream_of) {
    Route route;
    route.type_name = command_type_name<C>();
    route.stream_of = [stream_of = std::move(stream_of)](const void* c) {
      return std::string(stream_of(*static_cast<const C*>(c)));
    };
    if constexpr (SelfValidating<C>) {
      route.validate = [](const void* c) -> std::optional<FieldError> { return static_cast<const C*>(c)->validate(); };
    }
    route.handle = [handler = std::move(handler)](const void* c, const CommandContext& ctx, bool) {
      return handler(*static_cast<const C*>(c), ctx);
    };
    add(typeid(C), std::move(route));
    return *this;
  }
  // Routes C to `repository`, which decides it on the stream `stream_of(command)`.
  template <class C, class D, class R, class StreamOf>
  requires DeciderFor<D, C> CommandBus& register_handler(const Repository<D, R>& repository, StreamOf stream_of) {
    Route route;
    route.type_name = command_type_name<C>();
    route.stream_of = [stream_of = std::move(stream_of)](const void* c) {
      return std::string(stream_of(*static_cast<const C*>(c)));
    };
    if constexpr (SelfValidating<C>) {
      route.validate = [](const void* c) -> std::optional<FieldError> { return static_cast<const C*>(c)->validate(); };
    }
    route.handle = [&repository](const void* c, const CommandContext& ctx, bool idempotent) {
      return repository.handle_command(ctx.stream, *static_cast<const C*>(c), ctx.meta, idempotent);
    };
    add(typeid(C), std::move(route));
    return *this;
  }
  // The same, with the stream from the command's stream().
  template <class C, class D, class R>
  requires DeciderFor<D, C> && TargetsStream<C> CommandBus& register_handler(const Repository<D, R>& repository) {
    return register_handler<C>(repository, [](const C& c) { return c.stream(); });
  }

  // Appends a middleware to the chain.
  CommandBus& use(std::shared_ptr<Middleware> middleware);

  // Names a projection dispatches can wait for. Throws InvalidArgument on an empty name, a null waiter,
  // or a name registered already.
  CommandBus& register_projection(std::string name, ProjectionWaiter waiter);

  // Handles `command` (see the top of this header), then waits for `options.wait_for` before the
  // middleware's after() (which sees projections_behind). Throws InvalidArgument when C has no handler or
  // a projection to wait for is not registered (both before anything is handled), InvalidCommand when it
  // fails its validation, and whatever the middleware or handler throw.
  template <class C>
  CommandResult dispatch(const C& command, CommandMeta meta = {}, DispatchOptions options = {}) const {
    return dispatch(typeid(C), &command, std::move(meta), options);
  }

  template <class C>
  static std::string command_type_name() {
    if constexpr (requires { C::kCommandType; }) {
      return std::string(C::kCommandType);
    } else {
      return detail::type_name_of(typeid(C).name());
    }
  }

 private:
  struct Route {
    std::string type_name;
    std::function<std::string(const void*)> stream_of;
    std::function<std::optional<FieldError>(const void*)> validate;
    std::function<CommandResult(const void*, const CommandContext&, bool idempotent)> handle;
  };
  void add(std::type_index type, Route route);
  CommandResult dispatch(std::type_index type, const void* command, CommandMeta meta,
                         const DispatchOptions& options) const;
  void wait_for_projections(const DispatchOptions& options, CommandResult& result) const;

  std::unordered_map<std::type_index, Route> routes_;
  std::unordered_map<std::string, ProjectionWaiter> projections_;
  std::vector<std::shared_ptr<Middleware>> middleware_;
};

}  // namespace sourced
