#pragma once
// The in-memory engine: the whole contract, no durability. For tests and as the model that other
// engines are compared with.

#include <memory>

#include "sourced/store.hpp"

namespace sourced {

std::unique_ptr<EventStore> open_memory_store();

}  // namespace sourced
