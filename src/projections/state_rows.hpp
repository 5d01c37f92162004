#pragma once
// What the SQL read-model stores share: the state table's columns and the text form of updated_at.

#include <optional>
#include <string_view>

#include "sourced/event.hpp"

namespace sourced::detail {

// Parses the ISO-8601 UTC form format_timestamp() writes (2026-11-29T18:35:17.123456Z); nullopt otherwise.
std::optional<Timestamp> parse_timestamp(std::string_view text);

}  // namespace sourced::detail
