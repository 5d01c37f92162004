#include "json_text.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace sourced::cli {
namespace {

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

// One pass over the text, checking it against RFC 8259 without building anything. Containers are tracked
// on an explicit stack of kMaxJsonDepth entries, so no input can exhaust the call stack.
class Scanner {
 public:
  Scanner(std::string_view text, std::size_t max_depth)
      : begin_(reinterpret_cast<const unsigned char*>(text.data())),
        p_(begin_),
        end_(begin_ + text.size()),
        max_depth_(std::min(max_depth, kMaxJsonDepth + 1)) {}

  std::optional<std::string> run(bool object_only, std::vector<JsonMember>* members) {
    members_ = members;
    if (members_) members_->clear();
    skip_space();
    if (object_only && (p_ == end_ || *p_ != '{')) {
      fail("expected a JSON object");
      return problem_;
    }
    if (!scan()) return problem_;
    return std::nullopt;
  }

 private:
  bool fail(std::string_view what) {
    if (p_ == end_) {
      problem_ = fmt::format("{} at the end of the text", what);
    } else {
      problem_ = fmt::format("{} at byte {}", what, p_ - begin_ + 1);
    }
    return false;
  }

  void skip_space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  std::string_view span(const unsigned char* from, const unsigned char* to) const {
    return {reinterpret_cast<const char*>(from), static_cast<std::size_t>(to - from)};
  }

  bool scan() {
    for (;;) {
      // A value starts here.
      skip_space();
      if (p_ == end_) return fail("expected a value");
      if (depth_ == 1 && members_) value_start_ = p_;
      switch (*p_) {
        case '{':
        case '[': {
          if (depth_ == max_depth_) return fail(fmt::format("nested deeper than {} levels", kMaxJsonDepth));
          char open = static_cast<char>(*p_);
          char close = open == '{' ? '}' : ']';
          ++p_;
          skip_space();
          if (p_ != end_ && *p_ == close) {
            ++p_;
            break;  // an empty container is a complete value
          }
          stack_[depth_++] = open;
          if (open == '{' && !key()) return false;
          continue;
        }
        case '"':
          if (!string()) return false;
          break;
        case 't':
          if (!literal("true")) return false;
          break;
        case 'f':
          if (!literal("false")) return false;
          break;
        case 'n':
          if (!literal("null")) return false;
          break;
        default:
          if (*p_ != '-' && !is_digit(*p_)) return fail("expected a value");
          if (!number()) return false;
          break;
      }
      // A value just ended: close the containers it ends, or go on to the next member or element.
      for (;;) {
        if (depth_ == 0) {
          skip_space();
          if (p_ != end_) return fail("unexpected text after the JSON value");
          return true;
        }
        if (depth_ == 1 && members_) members_->back().value = span(value_start_, p_);
        skip_space();
        if (p_ == end_) return fail(stack_[depth_ - 1] == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        if (*p_ == ',') {
          ++p_;
          if (stack_[depth_ - 1] == '{' && !key()) return false;
          break;
        }
        if (*p_ == (stack_[depth_ - 1] == '{' ? '}' : ']')) {
          ++p_;
          --depth_;
          continue;
        }
        return fail(stack_[depth_ - 1] == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
      }
    }
  }

  // A member's key and its colon; the value follows.
  bool key() {
    skip_space();
    if (p_ == end_ || *p_ != '"') return fail("expected a string key");
    const unsigned char* start = p_;
    if (!string()) return false;
    if (depth_ == 1 && members_) members_->push_back({span(start + 1, p_ - 1), {}});
    skip_space();
    if (p_ == end_ || *p_ != ':') return fail("expected ':'");
    ++p_;
    return true;
  }

  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() || span(p_, p_ + word.size()) != word) {
      return fail("expected a value");
    }
    p_ += word.size();
    return true;
  }

  bool hex4(std::uint32_t& out) {
    if (end_ - p_ < 4) return fail("a \\u escape needs four hex digits");
    out = 0;
    for (int i = 0; i < 4; ++i) {
      unsigned char c = p_[i];
      std::uint32_t d;
      if (is_digit(c)) {
        d = c - '0';
      } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
        d = (c | 0x20) - 'a' + 10;
      } else {
        return fail("a \\u escape needs four hex digits");
      }
      out = out << 4 | d;
    }
    p_ += 4;
    return true;
  }

  bool string() {
    ++p_;  // the opening quote
    for (;;) {
#if defined(__SSE2__)
      // Sixteen bytes at a time until a quote, a backslash, a control character or a non-ASCII byte.
      while (end_ - p_ >= 16) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p_));
        __m128i special =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                         _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));  // signed: also >= 0x80
        int mask = _mm_movemask_epi8(special);
        if (mask != 0) {
          p_ += __builtin_ctz(static_cast<unsigned>(mask));
          break;
        }
        p_ += 16;
      }
#endif
      if (p_ == end_) return fail("unterminated string");
      unsigned char c = *p_;
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c == '\\') {
        if (!escape()) return false;
      } else if (c < 0x20) {
        return fail("a control character in a string (it must be escaped)");
      } else if (c < 0x80) {
        ++p_;
      } else if (!utf8_sequence()) {
        return false;
      }
    }
  }

  bool escape() {
    ++p_;
    if (p_ == end_) return fail("unterminated string");
    switch (*p_) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        ++p_;
        return true;
      case 'u': {
        ++p_;
        std::uint32_t u;
        if (!hex4(u)) return false;
        if (u >= 0xDC00 && u <= 0xDFFF) return fail("a \\u escape of a lone low surrogate");
        if (u >= 0xD800 && u <= 0xDBFF) {
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return fail("a \\u escape of a lone high surrogate");
          p_ += 2;
          std::uint32_t low;
          if (!hex4(low)) return false;
          if (low < 0xDC00 || low > 0xDFFF) return fail("a \\u escape of a lone high surrogate");
        }
        return true;
      }
      default:
        return fail("an invalid escape in a string");
    }
  }

  bool utf8_sequence() {
    unsigned char c = *p_;
    int len;
    std::uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07;
    } else {
      return fail("invalid UTF-8");
    }
    if (end_ - p_ < len) return fail("invalid UTF-8");
    for (int k = 1; k < len; ++k) {
      if ((p_[k] & 0xC0) != 0x80) return fail("invalid UTF-8");
      cp = cp << 6 | (p_[k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return fail("invalid UTF-8");
    }
    p_ += len;
    return true;
  }

  bool number() {
    const unsigned char* start = p_;
    if (*p_ == '-') ++p_;
    const unsigned char* int_start = p_;
    if (p_ != end_ && *p_ == '0') {
      ++p_;
    } else if (p_ != end_ && is_digit(*p_)) {
      while (p_ != end_ && is_digit(*p_)) ++p_;
    } else {
      return fail("invalid number");
    }
    std::size_t int_digits = p_ - int_start;
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      if (p_ == end_ || !is_digit(*p_)) return fail("invalid number (a digit must follow '.')");
      while (p_ != end_ && is_digit(*p_)) ++p_;
    }
    bool exponent = false;
    if (p_ != end_ && (*p_ | 0x20) == 'e') {
      exponent = true;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !is_digit(*p_)) return fail("invalid number (a digit must follow the exponent)");
      while (p_ != end_ && is_digit(*p_)) ++p_;
    }
    // Integers of any length are kept as written; a number too large to be a finite double (1e400) would
    // become infinity or an error in most readers, so it is refused. Tiny ones (1e-400) read as zero.
    if ((exponent || int_digits > 308) && overflows(start, p_)) {
      p_ = start;
      return fail("a number too large for a double");
    }
    return true;
  }

  static bool overflows(const unsigned char* from, const unsigned char* to) {
    double d;
    auto [end, ec] = std::from_chars(reinterpret_cast<const char*>(from), reinterpret_cast<const char*>(to), d);
    if (ec != std::errc::result_out_of_range) return false;
    // Out of range either way: too large, or too small (underflow). Its magnitude decides.
    const unsigned char* p = from;
    if (*p == '-') ++p;
    long long magnitude = 0;  // the power of ten of the first significant digit
    const unsigned char* digits = p;
    while (p != to && is_digit(*p)) ++p;
    if (!(p - digits == 1 && *digits == '0')) {
      magnitude = p - digits - 1;
    } else if (p != to && *p == '.') {
      ++p;
      long long zeros = 0;
      while (p != to && *p == '0') ++p, ++zeros;
      magnitude = -zeros - 1;
    }
    while (p != to && (*p | 0x20) != 'e') ++p;
    if (p == to) return magnitude > 0;
    ++p;
    bool negative = *p == '-';
    if (*p == '+' || *p == '-') ++p;
    long long exp = 0;
    while (p != to && exp < 1'000'000'000) exp = exp * 10 + (*p++ - '0');
    return magnitude + (negative ? -exp : exp) > 0;
  }

  const unsigned char* begin_;
  const unsigned char* p_;
  const unsigned char* end_;
  std::size_t max_depth_;
  std::array<char, kMaxJsonDepth + 1> stack_{};
  std::size_t depth_ = 0;
  std::vector<JsonMember>* members_ = nullptr;
  const unsigned char* value_start_ = nullptr;
  std::optional<std::string> problem_;
};

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | cp >> 6);
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | cp >> 12);
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | cp >> 18);
    out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::uint32_t hex_value(std::string_view four) {
  std::uint32_t v = 0;
  std::from_chars(four.data(), four.data() + 4, v, 16);
  return v;
}

}  // namespace

std::optional<std::string> json_problem(std::string_view text) {
  return Scanner(text, kMaxJsonDepth).run(false, nullptr);
}

std::optional<std::string> json_object_problem(std::string_view text, std::vector<JsonMember>& members,
                                               std::size_t max_depth) {
  return Scanner(text, max_depth).run(true, &members);
}

std::string json_key_text(std::string_view key) {
  if (key.find('\\') == std::string_view::npos) return std::string(key);
  std::string out;
  out.reserve(key.size());
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (key[i] != '\\') {
      out += key[i];
      continue;
    }
    char c = key[++i];
    switch (c) {
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        std::uint32_t cp = hex_value(key.substr(i + 1, 4));
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {  // validated: a low surrogate escape follows
          std::uint32_t low = hex_value(key.substr(i + 3, 4));
          i += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        append_utf8(out, cp);
        break;
      }
      default:  // '"', '\\', '/'
        out += c;
    }
  }
  return out;
}

std::string json_string_text(std::string_view quoted) { return json_key_text(quoted.substr(1, quoted.size() - 2)); }

char* write_json_string(char* p, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  *p++ = '"';
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != '"' && c != '\\') {
      *p++ = ch;
      continue;
    }
    *p++ = '\\';
    switch (c) {
      case '"':
        *p++ = '"';
        break;
      case '\\':
        *p++ = '\\';
        break;
      case '\n':
        *p++ = 'n';
        break;
      case '\r':
        *p++ = 'r';
        break;
      case '\t':
        *p++ = 't';
        break;
      default:
        std::memcpy(p, "u00", 3);
        p += 3;
        *p++ = kHex[c >> 4];
        *p++ = kHex[c & 0xF];
    }
  }
  *p++ = '"';
  return p;
}

void append_json_string(std::string& out, std::string_view text) {
  std::size_t start = out.size();
  out.resize(start + json_string_bound(text.size()));
  out.resize(static_cast<std::size_t>(write_json_string(out.data() + start, text) - out.data()));
}

char* write_base64(char* p, std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::size_t i = 0;
  auto byte = [&](std::size_t k) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    *p++ = kAlphabet[v >> 18];
    *p++ = kAlphabet[v >> 12 & 63];
    *p++ = kAlphabet[v >> 6 & 63];
    *p++ = kAlphabet[v & 63];
  }
  if (bytes.size() - i == 1) {
    std::uint32_t v = byte(i) << 16;
    *p++ = kAlphabet[v >> 18];
    *p++ = kAlphabet[v >> 12 & 63];
    *p++ = '=';
    *p++ = '=';
  } else if (bytes.size() - i == 2) {
    std::uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    *p++ = kAlphabet[v >> 18];
    *p++ = kAlphabet[v >> 12 & 63];
    *p++ = kAlphabet[v >> 6 & 63];
    *p++ = '=';
  }
  return p;
}

void append_base64(std::string& out, std::string_view bytes) {
  std::size_t start = out.size();
  out.resize(start + base64_size(bytes.size()));
  write_base64(out.data() + start, bytes);
}

}  // namespace sourced::cli
