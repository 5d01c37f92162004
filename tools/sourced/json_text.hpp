#pragma once
// JSON as the CLI handles it: validated, never re-encoded. User input is checked once and stored as the
// bytes given (numbers, key order and duplicate keys kept); stored bytes are checked again on output to
// decide whether they can be printed as JSON. Nothing here builds a parse tree, so the cost is one pass.
// Free functions without shared state: safe from any thread.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sourced::cli {

// The deepest nesting of arrays and objects accepted (documented in the README and `--help`). Deeper input
// is refused rather than risking the stack of whichever program parses it next.
inline constexpr std::size_t kMaxJsonDepth = 512;

// One member of a JSON object, both parts as raw spans of the input: `key` between its quotes with escapes
// as written, `value` exactly as written (no surrounding whitespace).
struct JsonMember {
  std::string_view key;
  std::string_view value;
};

// Why `text` is not one JSON value (RFC 8259, UTF-8, no lone surrogate escapes, numbers finite as doubles,
// at most kMaxJsonDepth levels); nullopt when it is. Whitespace around the value is allowed.
std::optional<std::string> json_problem(std::string_view text);

// As json_problem, but `text` must be an object; its top-level members are put in `members` (cleared
// first), in order, duplicates included. `max_depth` counts the object itself.
std::optional<std::string> json_object_problem(std::string_view text, std::vector<JsonMember>& members,
                                               std::size_t max_depth = kMaxJsonDepth);

// The text of a JSON string (a raw span from JsonMember, quotes included), escapes decoded. The span must
// have been validated.
std::string json_string_text(std::string_view quoted);
// Same for a key span (without quotes).
std::string json_key_text(std::string_view key);

// Appends `text` (valid UTF-8) to `out` as a quoted JSON string.
void append_json_string(std::string& out, std::string_view text);
// The same written at `p`, which has room for json_string_bound(text.size()) bytes; returns the end. For
// output built in place (the read command's lines), without a std::string append per part.
char* write_json_string(char* p, std::string_view text);
// The longest quoted JSON string of `n` bytes: each byte may become a 6-byte \u00XX escape.
constexpr std::size_t json_string_bound(std::size_t n) { return 6 * n + 2; }

// Appends `bytes` to `out` in standard base64 with padding (RFC 4648).
void append_base64(std::string& out, std::string_view bytes);
// The same written at `p`, which has room for base64_size(bytes.size()) bytes; returns the end.
char* write_base64(char* p, std::string_view bytes);
// The length of the base64 text of `n` bytes.
constexpr std::size_t base64_size(std::size_t n) { return (n + 2) / 3 * 4; }

}  // namespace sourced::cli
