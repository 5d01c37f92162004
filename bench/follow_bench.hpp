#pragma once
// The following workload of sourced_bench (--only follow): a projection following sustained appends
// (lag from an append's acknowledgement to the projection having committed it), and commands dispatched
// on the bus waiting for that projection (read-your-writes), with the model in SQLite and in PostgreSQL.

#include <string>

#include "sourced/store.hpp"

namespace sourced::bench {

// `rate` events/s for `seconds`, appended 10 per append by 4 paced writers.
void bench_follow(EventStore& store, const std::string& location, double seconds, int rate);

}  // namespace sourced::bench
