#pragma once
// How the CQRS consumers (event handlers, process managers) compare the filter of a subscription that
// exists with the one they would create, and name filters in their errors.

#include <optional>
#include <string>

#include "sourced/store.hpp"

namespace sourced::detail {

inline bool same_filter(const std::optional<EventFilter>& a, const std::optional<EventFilter>& b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return a->category == b->category && a->stream_prefix == b->stream_prefix && a->event_types == b->event_types;
}

inline std::string describe_filter(const std::optional<EventFilter>& f) {
  if (!f) return "every event";
  std::string s;
  if (f->category) s += "category " + *f->category;
  if (f->stream_prefix) s += "stream prefix " + *f->stream_prefix;
  if (!f->event_types.empty()) {
    if (!s.empty()) s += ", ";
    s += "types";
    for (const auto& t : f->event_types) s += " " + t;
  }
  return s.empty() ? "every event" : s;
}

}  // namespace sourced::detail
