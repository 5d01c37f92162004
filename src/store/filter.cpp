#include "store/filter.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace sourced {

bool EventFilter::matches(std::string_view stream, std::string_view type) const {
  if (category && category_of(stream) != *category) return false;
  if (stream_prefix && !stream.starts_with(*stream_prefix)) return false;
  if (!event_types.empty() && std::find(event_types.begin(), event_types.end(), type) == event_types.end()) {
    return false;
  }
  return true;
}

namespace detail {
namespace {

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

std::optional<std::string> prefix_upper_bound(std::string_view prefix) {
  std::string s(prefix);
  while (!s.empty()) {
    // The last code point: back up over continuation bytes.
    std::size_t start = s.size() - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    auto lead = static_cast<unsigned char>(s[start]);
    std::size_t len = s.size() - start;
    char32_t cp = len == 1 ? lead : len == 2 ? lead & 0x1F : len == 3 ? lead & 0x0F : lead & 0x07;
    for (std::size_t i = start + 1; i < s.size(); ++i) cp = (cp << 6) | (static_cast<unsigned char>(s[i]) & 0x3F);
    s.resize(start);
    if (cp >= 0x10FFFF) continue;  // nothing follows the last code point: carry into the one before
    ++cp;
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xE000;  // surrogates never occur in UTF-8
    append_utf8(s, cp);
    return s;
  }
  return std::nullopt;
}

FilterPlan plan_filter(const EventFilter& filter) {
  FilterPlan plan;
  if (filter.category && filter.stream_prefix) {
    throw InvalidArgument("a filter takes a category or a stream prefix, not both");
  }
  if (filter.category) {
    const std::string& c = *filter.category;
    if (c.empty() || c.find('-') != std::string::npos || stream_id_problem(c)) {
      throw InvalidArgument(fmt::format(
          "'{}' is not a category: a category is the non-empty text before the first '-' of a stream id", c));
    }
    plan.by_stream = true;
    plan.exact = c;
    plan.lo = c + "-";
    plan.hi = c + ".";  // '.' follows '-'
  } else if (filter.stream_prefix) {
    const std::string& p = *filter.stream_prefix;
    if (!p.empty()) {
      if (auto problem = stream_id_problem(p)) {
        throw InvalidArgument(fmt::format("the stream prefix is not valid: {}", *problem));
      }
      plan.by_stream = true;
      plan.lo = p;
      plan.hi = prefix_upper_bound(p);
    }
  }
  for (const auto& t : filter.event_types) {
    if (auto problem = event_type_problem(t))
      throw InvalidArgument(fmt::format("bad event type in filter: {}", *problem));
  }
  plan.types = filter.event_types;
  std::sort(plan.types.begin(), plan.types.end());
  plan.types.erase(std::unique(plan.types.begin(), plan.types.end()), plan.types.end());
  return plan;
}

}  // namespace detail
}  // namespace sourced
