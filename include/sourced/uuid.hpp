#pragma once
// sourced::Uuid: a 128-bit identifier (RFC 9562) for events, commands and correlations.
//
// Value type; safe to copy and share between threads. Uuid::v7() makes time-ordered ids, which the
// engines index cheaply (inserts land at the right edge of the B-tree), so they are what the store
// generates when an event arrives without an id.

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace sourced {

class Uuid {
 public:
  using Bytes = std::array<std::uint8_t, 16>;

  constexpr Uuid() = default;  // the nil UUID
  constexpr explicit Uuid(const Bytes& bytes) : bytes_(bytes) {}

  // Time-ordered (version 7): 48 bits of Unix milliseconds, then a counter and random bits, so ids made
  // by one process increase strictly. Thread-safe.
  static Uuid v7();
  // Random (version 4).
  static Uuid v4();
  // Name-based (version 5, RFC 9562 5.5): the SHA-1 of `name_space` and `name`, so the same pair always
  // gives the same id. What derives deterministic ids from another id (a command's events from its id).
  static Uuid v5(const Uuid& name_space, std::string_view name);
  // Parses the canonical 8-4-4-4-12 hex form (either case); nullopt when `text` is not a UUID.
  static std::optional<Uuid> parse(std::string_view text);

  const Bytes& bytes() const { return bytes_; }
  bool is_nil() const { return bytes_ == Bytes{}; }
  int version() const { return bytes_[6] >> 4; }
  std::string to_string() const;  // lower-case canonical form

  friend constexpr auto operator<=>(const Uuid&, const Uuid&) = default;

 private:
  Bytes bytes_{};
};

}  // namespace sourced

template <>
struct std::hash<sourced::Uuid> {
  std::size_t operator()(const sourced::Uuid& id) const noexcept {
    std::uint64_t a = 0, b = 0;
    for (int i = 0; i < 8; ++i) a = (a << 8) | id.bytes()[i];
    for (int i = 8; i < 16; ++i) b = (b << 8) | id.bytes()[i];
    return std::hash<std::uint64_t>{}(a ^ (b * 0x9E3779B97F4A7C15ULL));
  }
};
