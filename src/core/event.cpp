#include "sourced/event.hpp"

#include <charconv>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace sourced {
namespace {

// Checks UTF-8 well-formedness and the absence of control characters (C0, DEL and C1).
std::optional<std::string> text_problem(std::string_view what, std::string_view s, std::size_t max_bytes) {
  if (s.empty()) return fmt::format("{} must not be empty", what);
  if (s.size() > max_bytes) return fmt::format("{} is {} bytes long; the limit is {}", what, s.size(), max_bytes);
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    unsigned c = p[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return fmt::format("{} contains a control character at byte {}", what, i);
      ++i;
      continue;
    }
    int len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > n) return fmt::format("{} is not valid UTF-8 (byte {})", what, i);
    std::uint32_t cp = c & (0x7F >> len);
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return fmt::format("{} is not valid UTF-8 (byte {})", what, i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return fmt::format("{} is not valid UTF-8 (byte {})", what, i);
    if (cp >= 0x80 && cp <= 0x9F) return fmt::format("{} contains a control character at byte {}", what, i);
    i += len;
  }
  return std::nullopt;
}

}  // namespace

std::string ExpectedVersion::to_string() const {
  switch (kind_) {
    case Kind::any:
      return "any";
    case Kind::no_stream:
      return "no_stream";
    case Kind::stream_exists:
      return "stream_exists";
    case Kind::exact:
      return std::to_string(version_);
  }
  return "?";
}

std::optional<ExpectedVersion> ExpectedVersion::parse(std::string_view text) {
  if (text == "any") return any();
  if (text == "no_stream") return no_stream();
  if (text == "stream_exists") return stream_exists();
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return exact(v);
}

std::optional<std::string> stream_id_problem(std::string_view stream) {
  return text_problem("a stream id", stream, kMaxStreamIdBytes);
}

std::optional<std::string> event_type_problem(std::string_view type) {
  return text_problem("an event type", type, kMaxEventTypeBytes);
}

bool is_system_stream(std::string_view stream) { return !stream.empty() && stream.front() == '$'; }

std::string_view category_of(std::string_view stream) {
  auto dash = stream.find('-');
  return dash == std::string_view::npos ? stream : stream.substr(0, dash);
}

std::string format_timestamp(Timestamp t) {
  auto secs = std::chrono::floor<std::chrono::seconds>(t);
  auto micros = (t - secs).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:06d}Z", secs, micros);
}

Timestamp now() { return std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now()); }

}  // namespace sourced
