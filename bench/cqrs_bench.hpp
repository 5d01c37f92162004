#pragma once
// The CQRS workloads of sourced_bench (--only cqrs): command dispatch beside plain appends of the same
// events, and loading a long aggregate with and without a snapshot.

#include <vector>

#include "sourced/store.hpp"

namespace sourced::bench {

void bench_cqrs(EventStore& store, double seconds, const std::vector<int>& client_counts);

}  // namespace sourced::bench
