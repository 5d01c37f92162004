// `sourced append`: one event from the options, or many from JSON lines on stdin, appended atomically.

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <istream>
#include <memory>
#include <ostream>

#include <fmt/format.h>

#include "cli.hpp"
#include "commands.hpp"
#include "json_text.hpp"

namespace sourced::cli {
namespace {

// Bytes read from stdin at a time, into a buffer reused for the whole input. SOURCED_STDIN_CHUNK (bytes)
// overrides it, for the tests of lines that cross chunk boundaries (documented in the README as a test
// hook: any value appends the same events).
const std::size_t kStdinChunk = [] {
  const char* given = std::getenv("SOURCED_STDIN_CHUNK");
  std::size_t v = 0;
  if (given) std::from_chars(given, given + std::strlen(given), v);
  return v > 0 ? v : std::size_t{1} << 20;
}();

std::string checked_json(const std::optional<std::string>& given, std::string_view what) {
  if (!given) return "{}";
  if (auto problem = json_problem(*given)) throw UsageError(fmt::format("{} is not valid JSON: {}", what, *problem));
  return *given;  // the bytes as given: numbers, key order and duplicate keys are the user's
}

std::optional<std::string> decode_base64(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else if (pad > 0 || (v[k] = value(c)) < 0) {
        return std::nullopt;
      }
    }
    std::uint32_t bits = v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3];
    out += static_cast<char>(bits >> 16);
    if (pad < 2) out += static_cast<char>(bits >> 8 & 0xFF);
    if (pad < 1) out += static_cast<char>(bits & 0xFF);
  }
  return out;
}

// One event from a JSON line. Field values are raw spans of the line: data and metadata are stored as
// written. Other members (such as the stream, version and position of `sourced read` output) are ignored,
// so the output of a read can be appended elsewhere.
EventData event_from_line(std::string_view line, std::size_t number, std::vector<JsonMember>& members) {
  if (auto problem = json_object_problem(line, members, kMaxJsonDepth + 1)) {
    throw UsageError(fmt::format("stdin line {} is not a valid JSON object: {}", number, *problem));
  }
  EventData e;
  enum Field { kType, kData, kDataBase64, kMetadata, kMetadataBase64, kId, kCorrelationId, kCausationId, kFields };
  static constexpr std::string_view kNames[kFields] = {
      "type", "data", "data_base64", "metadata", "metadata_base64", "id", "correlation_id", "causation_id"};
  std::string_view values[kFields];
  for (const auto& m : members) {
    std::string unescaped;
    std::string_view key = m.key;
    if (key.find('\\') != std::string_view::npos) key = unescaped = json_key_text(key);
    for (int f = 0; f < kFields; ++f) {
      if (key != kNames[f]) continue;
      if (!values[f].empty()) throw UsageError(fmt::format("stdin line {}: \"{}\" is given twice", number, key));
      values[f] = m.value;
    }
  }
  auto text = [&](int f) -> std::optional<std::string> {
    if (values[f].empty() || values[f] == "null") return std::nullopt;
    if (values[f].front() != '"') {
      throw UsageError(fmt::format("stdin line {}: \"{}\" must be a string", number, kNames[f]));
    }
    return json_string_text(values[f]);
  };
  auto type = text(kType);
  if (!type) throw UsageError(fmt::format("stdin line {}: \"type\" is required", number));
  e.type = std::move(*type);
  auto payload = [&](int json_field, int base64_field) -> std::string {
    if (!values[json_field].empty() && !values[base64_field].empty()) {
      throw UsageError(fmt::format("stdin line {}: give \"{}\" or \"{}\", not both", number, kNames[json_field],
                                   kNames[base64_field]));
    }
    if (!values[base64_field].empty()) {
      auto encoded = text(base64_field);
      auto bytes = encoded ? decode_base64(*encoded) : std::nullopt;
      if (!bytes) {
        throw UsageError(fmt::format("stdin line {}: \"{}\" is not base64", number, kNames[base64_field]));
      }
      return std::move(*bytes);
    }
    return values[json_field].empty() ? std::string("{}") : std::string(values[json_field]);
  };
  e.data = payload(kData, kDataBase64);
  e.metadata = payload(kMetadata, kMetadataBase64);
  // The line was checked as JSON above, so its data and metadata values are JSON; base64 ones are any bytes.
  bool base64 = !values[kDataBase64].empty() || !values[kMetadataBase64].empty();
  e.content_type = base64 ? ContentType::binary : ContentType::json;
  auto uuid = [&](int f) -> std::optional<Uuid> {
    auto id = text(f);
    if (!id) return std::nullopt;
    return parse_uuid(*id, fmt::format("stdin line {}: \"{}\"", number, kNames[f]));
  };
  e.id = uuid(kId);
  e.correlation_id = uuid(kCorrelationId);
  e.causation_id = uuid(kCausationId);
  return e;
}

// Reads JSON lines in fixed chunks into one reused buffer and makes each complete line an event at once: the
// input is never held whole (its pages would be touched twice more, and a growing copy of it again). A line
// longer than the buffer grows it. `chunk` is a parameter for the tests of lines across chunk boundaries.
std::vector<EventData> events_from_stdin(std::istream& in, std::size_t chunk) {
  // Past 64 KiB of input (about 150 events of a few hundred bytes) the heap goes on huge pages, and only then
  // is the buffer a whole chunk, allocated on them. Measured on 1,000 events of ~350 bytes: one process took
  // 16.4 ms instead of 18.1 ms (median of 80, interleaved; docs/benchmarks.md). For one event it would cost ~0.2 ms
  // (zeroing a 2 MiB page to use a few KiB of it).
  constexpr std::size_t kLargeInput = 64u << 10;
  chunk = std::max<std::size_t>(chunk, 1);
  std::size_t capacity = std::min(chunk, kLargeInput);
  auto buffer = std::make_unique_for_overwrite<char[]>(capacity);
  std::size_t begin = 0, end = 0;  // bytes read and not yet taken: [begin, end)
  std::size_t scanned = 0;         // [begin, scanned) holds no newline
  std::vector<EventData> events;
  std::vector<JsonMember> members;
  std::size_t number = 0;
  auto take = [&](std::string_view line) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;
    events.push_back(event_from_line(line, number, members));
  };
  std::streambuf* source = in.rdbuf();
  std::size_t total = 0;
  bool large = false;
  for (bool more = source != nullptr;;) {
    while (scanned < end) {
      const char* nl = static_cast<const char*>(std::memchr(buffer.get() + scanned, '\n', end - scanned));
      if (!nl) {
        scanned = end;
        break;
      }
      auto at = static_cast<std::size_t>(nl - buffer.get());
      take(std::string_view(buffer.get() + begin, at - begin));
      begin = scanned = at + 1;
    }
    if (!more) break;
    // Keep the unfinished line at the front; a buffer full of one line doubles.
    if (begin > 0) {
      std::memmove(buffer.get(), buffer.get() + begin, end - begin);
      end -= begin;
      scanned -= begin;
      begin = 0;
    }
    if (end == capacity) {
      auto bigger = std::make_unique_for_overwrite<char[]>(capacity * 2);
      std::memcpy(bigger.get(), buffer.get(), end);
      buffer = std::move(bigger);
      capacity *= 2;
    }
    std::streamsize n = source->sgetn(buffer.get() + end, static_cast<std::streamsize>(capacity - end));
    if (n <= 0) {
      more = false;
      if (begin < end) take(std::string_view(buffer.get() + begin, end - begin));  // no newline at the end
      begin = scanned = end;
    } else {
      end += static_cast<std::size_t>(n);
      total += static_cast<std::size_t>(n);
      if (total >= kLargeInput && !large) {
        large = true;  // a large input: its events will touch much memory
        use_huge_pages_for_heap();
        if (capacity < chunk) {
          auto whole = std::make_unique_for_overwrite<char[]>(chunk);
          std::memcpy(whole.get(), buffer.get(), end);
          buffer = std::move(whole);
          capacity = chunk;
        }
      }
    }
  }
  return events;
}

std::string ids_json(const std::vector<EventData>& events) {
  std::string s = "[";
  for (const auto& e : events) {
    if (s.size() > 1) s += ',';
    s += '"';
    s += e.id->to_string();
    s += '"';
  }
  return s + "]";
}

}  // namespace

int append_command(const Options& o, Io& io) {
  ExpectedVersion expected = parse_expected(o.expected);
  if (auto problem = stream_id_problem(o.stream)) throw UsageError("invalid stream id: " + *problem);
  if (is_system_stream(o.stream)) {
    throw UsageError("stream '" + o.stream + "' is reserved for the system: ids starting with '$' cannot be written");
  }
  std::vector<EventData> events;
  if (o.type) {
    EventData e;
    e.type = *o.type;
    e.data = checked_json(o.data, "--data");
    e.metadata = checked_json(o.metadata, "--metadata");
    e.content_type = ContentType::json;  // both checked just above
    if (o.id) e.id = parse_uuid(*o.id, "--id");
    if (o.correlation_id) e.correlation_id = parse_uuid(*o.correlation_id, "--correlation-id");
    if (o.causation_id) e.causation_id = parse_uuid(*o.causation_id, "--causation-id");
    events.push_back(std::move(e));
  } else {
    // Events on stdin carry their own fields: an option for one event would silently apply to none.
    for (auto [given, name, field] : {std::tuple{&o.id, "--id", "id"},
                                      {&o.data, "--data", "data"},
                                      {&o.metadata, "--metadata", "metadata"},
                                      {&o.correlation_id, "--correlation-id", "correlation_id"},
                                      {&o.causation_id, "--causation-id", "causation_id"}}) {
      if (*given) {
        throw UsageError(fmt::format(
            "{} describes the one event given with --type; events read from stdin take \"{}\" from each line", name,
            field));
      }
    }
    events = events_from_stdin(io.in, kStdinChunk);
    if (events.empty()) throw UsageError("no events: give --type and --data, or JSON lines on stdin");
  }
  // The CLI names every event so it can print the ids (a caller repeats an append with them to make a retry
  // a no-op); ids it makes are time-ordered like the store's.
  for (auto& e : events) {
    if (!e.id) e.id = Uuid::v7();
  }

  auto store = open_for_writing(o.store, "append");
  AppendResult r;
  try {
    r = store->append(o.stream, expected, events);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::connection && !e.transient()) throw;
    // The append may have committed before the failure: the ids let a retry be a no-op instead of a copy.
    throw Error(
        e.code(),
        fmt::format("{}\nthe events' ids, to give again when repeating this append: {}", e.what(), ids_json(events)),
        e.transient());
  }
  std::string result = fmt::format(R"({{"stream":{},"first_version":{},"last_version":{},"first_position":{},)"
                                   R"("last_position":{},"replayed":{},"ids":{}}})",
                                   [&] {
                                     std::string s;
                                     append_json_string(s, o.stream);
                                     return s;
                                   }(),
                                   r.first_version.value(), r.last_version.value(), r.first_position.value(),
                                   r.last_position.value(), r.replayed, ids_json(events));
  io.out << result << '\n';
  io.out.flush();
  if (!io.out) {
    // Committed: a caller that took a failure for "not written" and retried would write the events twice.
    io.err << "sourced: the append was committed, but its result could not be written to stdout; it is here "
              "(do not repeat the append, or repeat it with these ids):\n"
           << result << '\n';
    return kOutputLost;
  }
  return kOk;
}

}  // namespace sourced::cli
