#include "sourced/command_bus.hpp"

#include <algorithm>
#include <cstdlib>

#include <cxxabi.h>
#include <fmt/format.h>

namespace sourced {

namespace detail {
std::string type_name_of(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}
}  // namespace detail

CommandBus& CommandBus::use(std::shared_ptr<Middleware> middleware) {
  if (!middleware) throw InvalidArgument("a null middleware");
  middleware_.push_back(std::move(middleware));
  return *this;
}

CommandBus& CommandBus::register_projection(std::string name, ProjectionWaiter waiter) {
  if (name.empty()) throw InvalidArgument("a projection to wait for needs a name");
  if (!waiter) throw InvalidArgument(fmt::format("projection '{}': a null waiter", name));
  if (projections_.contains(name)) {
    throw InvalidArgument(fmt::format("projection '{}' is registered on the command bus already", name));
  }
  projections_.emplace(std::move(name), std::move(waiter));
  return *this;
}

void CommandBus::wait_for_projections(const DispatchOptions& options, CommandResult& result) const {
  if (options.wait_for.empty() || result.position.value() == 0) return;
  // One deadline for all: the caller's timeout bounds the whole dispatch's wait, not each projection's.
  auto deadline = std::chrono::steady_clock::now() + options.timeout;
  for (const auto& name : options.wait_for) {
    // Rounded up: a waiter given what is left must not return before the caller's deadline.
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    bool reached = false;
    try {
      reached = projections_.at(name)(result.position, std::max(left, std::chrono::milliseconds(0)));
    } catch (...) {
      // The command is written: a waiter's failure must not look like the command's.
      reached = false;
    }
    if (!reached) result.projections_behind.push_back(name);
  }
}

void CommandBus::add(std::type_index type, Route route) {
  std::string name = route.type_name;
  if (!routes_.emplace(type, std::move(route)).second) {
    throw InvalidArgument(fmt::format("command type {} has a handler already: one handler per command type", name));
  }
}

CommandResult CommandBus::dispatch(std::type_index type, const void* command, CommandMeta meta,
                                   const DispatchOptions& options) const {
  auto it = routes_.find(type);
  if (it == routes_.end()) {
    throw InvalidArgument(fmt::format("no handler for command type {}", detail::type_name_of(type.name())));
  }
  for (const auto& name : options.wait_for) {
    if (!projections_.contains(name)) {
      throw InvalidArgument(fmt::format("command type {}: no projection '{}' to wait for is registered on the bus",
                                        it->second.type_name, name));
    }
  }
  const Route& route = it->second;
  const bool idempotent = meta.command_id.has_value();
  if (!meta.command_id) meta.command_id = Uuid::v7();
  if (!meta.correlation_id) meta.correlation_id = meta.command_id;
  CommandContext ctx;
  ctx.command_type = route.type_name;
  ctx.meta = meta;
  ctx.type = type;
  ctx.command_ptr = command;
  std::size_t entered = 0;
  try {
    ctx.stream = route.stream_of(command);
    for (const auto& m : middleware_) {
      ++entered;
      m->before(ctx);
    }
    if (route.validate) {
      if (auto error = route.validate(command)) throw InvalidCommand(route.type_name, std::move(*error));
    }
    CommandResult result = route.handle(command, ctx, idempotent);
    wait_for_projections(options, result);
    // The command is written: an after() that fails (a metrics exporter down) must not turn that into an
    // exception, or a caller retrying a command without an id would write it twice. Every after() runs;
    // what failed is in the result.
    for (std::size_t i = entered; i-- > 0;) {
      try {
        middleware_[i]->after(ctx, result);
      } catch (const std::exception& e) {
        result.middleware_errors.push_back(e.what());
      } catch (...) {
        result.middleware_errors.emplace_back("unknown exception");
      }
    }
    return result;
  } catch (const std::exception& e) {
    for (std::size_t i = entered; i-- > 0;) {
      try {
        middleware_[i]->on_failure(ctx, e);
      } catch (...) {
        // The first failure is the one the caller needs; a failing failure hook must not hide it.
      }
    }
    throw;
  }
}

}  // namespace sourced
