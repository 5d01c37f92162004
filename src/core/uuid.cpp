#include "sourced/uuid.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <random>
#include <string>

#include <pthread.h>

namespace sourced {
namespace {

// Bumped in a forked child: fork() copies every generator's state, so without a reseed parent and child
// would draw the same "random" bits and could make the same ids.
std::atomic<std::uint64_t> fork_generation{0};
[[maybe_unused]] const int fork_hook_registered =
    pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1, std::memory_order_relaxed); });

std::mt19937_64 seeded_generator() {
  std::random_device rd;
  std::seed_seq seq{rd(), rd(), rd(), rd()};
  return std::mt19937_64(seq);
}

std::uint64_t random_u64() {
  thread_local std::mt19937_64 gen = seeded_generator();
  thread_local std::uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (std::uint64_t now = fork_generation.load(std::memory_order_relaxed); now != generation) {
    generation = now;
    gen = seeded_generator();
  }
  return gen();
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// SHA-1 (FIPS 180-4), only for name-based UUIDs: not used where collisions could be forced to harm.
std::array<std::uint8_t, 20> sha1(std::string_view message) {
  std::uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  std::string m(message);
  std::uint64_t bits = static_cast<std::uint64_t>(message.size()) * 8;
  m.push_back(static_cast<char>(0x80));
  while (m.size() % 64 != 56) m.push_back(0);
  for (int i = 7; i >= 0; --i) m.push_back(static_cast<char>(bits >> (8 * i)));
  auto rotl = [](std::uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
  for (std::size_t chunk = 0; chunk < m.size(); chunk += 64) {
    std::uint32_t w[80];
    for (int i = 0; i < 16; ++i) {
      w[i] = 0;
      for (int j = 0; j < 4; ++j) w[i] = (w[i] << 8) | static_cast<std::uint8_t>(m[chunk + 4 * i + j]);
    }
    for (int i = 16; i < 80; ++i) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; ++i) {
      std::uint32_t f, k;
      if (i < 20) {
        f = (b & c) | (~b & d);
        k = 0x5A827999;
      } else if (i < 40) {
        f = b ^ c ^ d;
        k = 0x6ED9EBA1;
      } else if (i < 60) {
        f = (b & c) | (b & d) | (c & d);
        k = 0x8F1BBCDC;
      } else {
        f = b ^ c ^ d;
        k = 0xCA62C1D6;
      }
      std::uint32_t t = rotl(a, 5) + f + e + k + w[i];
      e = d;
      d = c;
      c = rotl(b, 30);
      b = a;
      a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
  }
  std::array<std::uint8_t, 20> out{};
  for (int i = 0; i < 20; ++i) out[i] = static_cast<std::uint8_t>(h[i / 4] >> (24 - 8 * (i % 4)));
  return out;
}

}  // namespace

Uuid Uuid::v5(const Uuid& name_space, std::string_view name) {
  std::string input(name_space.bytes().begin(), name_space.bytes().end());
  input.append(name);
  auto digest = sha1(input);
  Bytes b{};
  for (int i = 0; i < 16; ++i) b[i] = digest[i];
  b[6] = static_cast<std::uint8_t>(0x50 | (b[6] & 0x0F));
  b[8] = static_cast<std::uint8_t>(0x80 | (b[8] & 0x3F));
  return Uuid(b);
}

Uuid Uuid::v7() {
  // RFC 9562 method 1: a 12-bit counter in rand_a after the millisecond keeps ids from one process
  // strictly increasing; when the counter overflows, the carry advances the timestamp by one
  // millisecond. The (millisecond, counter) pair lives in one atomic word updated by compare-and-swap:
  // no lock on the append path (a mutex here halved the ids/s of 100 threads: bench --only ids).
  static std::atomic<std::uint64_t> last{0};  // ms << 12 | counter
  std::uint64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  std::uint64_t rnd = random_u64();
  std::uint64_t start = random_u64() & 0x3FF;
  std::uint64_t prev = last.load(std::memory_order_relaxed);
  std::uint64_t next;
  do {
    // A new millisecond starts the counter at a random value with headroom before overflow; within the
    // same (or an earlier: the clock went back) millisecond the previous id is incremented.
    next = (now_ms > prev >> 12) ? (now_ms << 12 | start) : prev + 1;
  } while (!last.compare_exchange_weak(prev, next, std::memory_order_relaxed));
  std::uint64_t ms = next >> 12, seq = next & 0xFFF;
  Bytes b{};
  for (int i = 0; i < 6; ++i) b[i] = static_cast<std::uint8_t>(ms >> (40 - 8 * i));
  b[6] = static_cast<std::uint8_t>(0x70 | ((seq >> 8) & 0x0F));
  b[7] = static_cast<std::uint8_t>(seq & 0xFF);
  b[8] = static_cast<std::uint8_t>(0x80 | (rnd & 0x3F));
  for (int i = 9; i < 16; ++i) b[i] = static_cast<std::uint8_t>(rnd >> (8 * (i - 8)));
  return Uuid(b);
}

Uuid Uuid::v4() {
  std::uint64_t a = random_u64(), c = random_u64();
  Bytes b{};
  for (int i = 0; i < 8; ++i) b[i] = static_cast<std::uint8_t>(a >> (8 * i));
  for (int i = 0; i < 8; ++i) b[8 + i] = static_cast<std::uint8_t>(c >> (8 * i));
  b[6] = static_cast<std::uint8_t>(0x40 | (b[6] & 0x0F));
  b[8] = static_cast<std::uint8_t>(0x80 | (b[8] & 0x3F));
  return Uuid(b);
}

std::optional<Uuid> Uuid::parse(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  Bytes b{};
  std::size_t j = 0;
  for (std::size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    b[j++] = static_cast<std::uint8_t>(hi << 4 | lo);
    i += 2;
  }
  return Uuid(b);
}

std::string Uuid::to_string() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    s.push_back(kHex[bytes_[i] >> 4]);
    s.push_back(kHex[bytes_[i] & 0xF]);
  }
  return s;
}

}  // namespace sourced
