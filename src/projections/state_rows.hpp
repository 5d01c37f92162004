#pragma once
// What the read-model stores share: the text form of updated_at, the hash that names a lease, and the
// errors table's rows.

#include <cstdint>
#include <optional>
#include <string_view>

#include "sourced/event.hpp"
#include "sourced/projection.hpp"

namespace sourced::detail {

// Parses the ISO-8601 UTC form format_timestamp() writes (2026-11-29T18:35:17.123456Z); nullopt otherwise.
std::optional<Timestamp> parse_timestamp(std::string_view text);

// FNV-1a 64 over bytes: stable across processes and builds (std::hash is not), so every process agrees
// on a partition and on a lease's lock.
std::uint64_t stable_hash(std::string_view bytes, std::uint64_t seed = 14695981039346656037ull);

// The lock number of a projection key's lease (name, version, partition).
std::uint64_t lease_hash(const ProjectionKey& key);

}  // namespace sourced::detail
