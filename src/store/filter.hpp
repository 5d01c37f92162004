#pragma once
// An EventFilter turned into what an engine's query needs: a range of stream ids (names sort by their
// bytes in every engine, so "starts with P" is "P <= name < P'"), an exact name (a category also matches
// the stream named after it) and a list of types.

#include <optional>
#include <string>
#include <vector>

#include "sourced/store.hpp"

namespace sourced::detail {

struct FilterPlan {
  bool by_stream = false;
  // When by_stream: names in [lo, hi) (no upper bound when hi is unset), or equal to `exact`.
  std::string lo;
  std::optional<std::string> hi;
  std::optional<std::string> exact;
  std::vector<std::string> types;  // any type when empty
};

// Checks the filter (throws InvalidArgument) and plans it.
FilterPlan plan_filter(const EventFilter& filter);

// The smallest string greater than every string that starts with `prefix` (a valid UTF-8 string; the
// result is one too), or nullopt when there is none.
std::optional<std::string> prefix_upper_bound(std::string_view prefix);

}  // namespace sourced::detail
