#include "sourced/command_bus.hpp"

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

void CommandBus::add(std::type_index type, Route route) {
  std::string name = route.type_name;
  if (!routes_.emplace(type, std::move(route)).second) {
    throw InvalidArgument(fmt::format("command type {} has a handler already: one handler per command type", name));
  }
}

CommandResult CommandBus::dispatch(std::type_index type, const void* command, CommandMeta meta) const {
  auto it = routes_.find(type);
  if (it == routes_.end()) {
    throw InvalidArgument(fmt::format("no handler for command type {}", detail::type_name_of(type.name())));
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
    for (std::size_t i = entered; i-- > 0;) middleware_[i]->after(ctx, result);
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
