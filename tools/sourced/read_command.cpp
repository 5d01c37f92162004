// `sourced read`: a stream or `$all` as JSON lines (or text), optionally following new events.

#include <charconv>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <sys/stat.h>

#include "cli.hpp"
#include "commands.hpp"
#include "json_text.hpp"
#include "sourced/memory_store.hpp"

namespace sourced::cli {
namespace {

// The read command's output buffer. Lines are written in place through a pointer (no std::string append
// per part, no zero-filling of room before use), and the buffer goes to the stream once it holds
// kFlushBytes: a read prints every event, and appending part by part was about as costly as SQLite's
// stepping through the rows.
class LineBuffer {
 public:
  explicit LineBuffer(std::ostream& out) : out_(out) {}

  // Where to write a line of at most `n` bytes; the line is taken with done().
  char* room(std::size_t n) {
    if (capacity_ - size_ < n) make_room(n);
    return data_.get() + size_;
  }
  // The line written from room() ends at `end`.
  void done(char* end) {
    size_ = static_cast<std::size_t>(end - data_.get());
    if (size_ >= kFlushBytes) write();
  }
  // Writes what is buffered and flushes the stream.
  void flush() {
    write();
    out_.flush();
    if (!out_) throw OutputError();
  }

 private:
  // As Output's: large enough that writes are few, small enough that the first touch of its pages (a page
  // fault each, ~10 us in a VM) costs little.
  static constexpr std::size_t kFlushBytes = 256 << 10;

  void write() {
    if (size_ > 0) {
      out_.write(data_.get(), static_cast<std::streamsize>(size_));
      size_ = 0;
    }
    if (!out_) throw OutputError();
  }
  void make_room(std::size_t n) {
    write();
    if (capacity_ >= n) return;
    // A line longer than the buffer (an event of megabytes) gets a buffer of its own size.
    capacity_ = std::max(n, kFlushBytes + (64 << 10));
    data_ = std::make_unique_for_overwrite<char[]>(capacity_);
  }

  std::ostream& out_;
  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

template <std::size_t N>
char* put(char* p, const char (&text)[N]) {
  std::memcpy(p, text, N - 1);
  return p + N - 1;
}

char* put(char* p, std::string_view text) {
  std::memcpy(p, text.data(), text.size());
  return p + text.size();
}

char* put_number(char* p, std::uint64_t v) { return std::to_chars(p, p + 20, v).ptr; }

// Written in place (Uuid::to_string makes a string per call: every event has an id), quoted.
char* put_uuid(char* p, const Uuid& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  *p++ = '"';
  const auto& b = id.bytes();
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = kHex[b[i] >> 4];
    *p++ = kHex[b[i] & 0xF];
  }
  *p++ = '"';
  return p;
}

// Bytes that are printed as they are, with CR and LF made spaces so the event stays on one line (valid
// JSON holds them only as whitespace).
char* put_one_line(char* p, std::string_view bytes) {
  std::memcpy(p, bytes.data(), bytes.size());
  if (std::memchr(bytes.data(), '\n', bytes.size()) || std::memchr(bytes.data(), '\r', bytes.size())) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      if (p[i] == '\n' || p[i] == '\r') p[i] = ' ';
    }
  }
  return p + bytes.size();
}

// Formats output lines at a pointer with room for the line (json_bound / text_bound).
class LineWriter {
 public:
  // The longest line event_json can write for `e`: the fixed parts with every optional one present and
  // numbers at their longest, each string byte escaped (6 bytes), each payload as base64 (4 bytes per 3,
  // never shorter than the bytes themselves).
  static std::size_t json_bound(const RecordedEvent& e) {
    return 400 + json_string_bound(e.stream.size()) + json_string_bound(e.type.size()) + base64_size(e.data.size()) +
           base64_size(e.metadata.size());
  }
  static std::size_t text_bound(const RecordedEvent& e) {
    return 128 + e.stream.size() + e.type.size() + e.data.size();
  }

  // Seconds change rarely between consecutive events: their text is made once.
  char* timestamp(char* p, Timestamp t) {
    auto secs = std::chrono::floor<std::chrono::seconds>(t);
    if (secs != cached_secs_ || !cached_) {
      cached_secs_ = secs;
      std::string text = format_timestamp(secs);  // "YYYY-MM-DDTHH:MM:SS.000000Z"
      std::memcpy(prefix_, text.data(), sizeof prefix_);
      cached_ = true;
    }
    p = put(p, std::string_view(prefix_, sizeof prefix_));
    auto micros = static_cast<unsigned>((t - secs).count());
    for (int i = 5; i >= 0; --i, micros /= 10) p[i] = static_cast<char>('0' + micros % 10);
    p[6] = 'Z';
    return p + 7;
  }

  // `"name":bytes` when the bytes are JSON (on one line, see put_one_line); `"name_base64":"..."`
  // otherwise; nothing for no bytes. Bytes of an event appended as ContentType::json are taken as JSON
  // unchecked: the check was the writer's, once. Others (unknown: stored before content types; binary:
  // metadata may still be JSON) are checked.
  static char* payload(char* p, std::string_view name, const std::string& bytes, bool json) {
    if (bytes.empty()) return p;
    p = put(p, ",\"");
    p = put(p, name);
    if (!json && json_problem(bytes)) {
      p = put(p, "_base64\":\"");
      p = write_base64(p, bytes);
      *p++ = '"';
      return p;
    }
    p = put(p, "\":");
    return put_one_line(p, bytes);
  }

  char* event_json(char* p, const RecordedEvent& e) {
    p = put(p, "{\"stream\":");
    p = write_json_string(p, e.stream);
    p = put(p, ",\"version\":");
    p = put_number(p, e.version.value());
    p = put(p, ",\"position\":");
    p = put_number(p, e.position.value());
    p = put(p, ",\"id\":");
    p = put_uuid(p, e.id);
    p = put(p, ",\"type\":");
    p = write_json_string(p, e.type);
    bool json = e.content_type == ContentType::json;
    p = payload(p, "data", e.data, json);
    p = payload(p, "metadata", e.metadata, json);
    p = put(p, ",\"created_at\":\"");
    p = timestamp(p, e.created_at);
    *p++ = '"';
    if (e.correlation_id) {
      p = put(p, ",\"correlation_id\":");
      p = put_uuid(p, *e.correlation_id);
    }
    if (e.causation_id) {
      p = put(p, ",\"causation_id\":");
      p = put_uuid(p, *e.causation_id);
    }
    return put(p, "}\n");
  }

  // One event for a person: position, stream@version, type, time, then the data on the same line.
  char* event_text(char* p, const RecordedEvent& e) {
    *p++ = '#';
    char* start = p;
    p = put_number(p, e.position.value());
    while (p - start < 8) *p++ = ' ';
    *p++ = ' ';
    p = put(p, e.stream);
    *p++ = '@';
    p = put_number(p, e.version.value());
    *p++ = ' ';
    p = put(p, e.type);
    *p++ = ' ';
    p = timestamp(p, e.created_at);
    *p++ = ' ';
    p = put_one_line(p, e.data);
    *p++ = '\n';
    return p;
  }

 private:
  std::chrono::sys_seconds cached_secs_{};
  bool cached_ = false;
  char prefix_[20];  // "YYYY-MM-DDTHH:MM:SS." of cached_secs_
};

// The identity of a SQLite store's file, to notice that it was deleted or replaced while followed (the
// open store would keep reading the old, unlinked file and never see another event).
struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  bool exists = false;

  static FileIdentity of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return {};
    return {st.st_dev, st.st_ino, true};
  }
  bool operator==(const FileIdentity&) const = default;
};

// Waits for a store that does not exist yet, without creating it. A SQLite file that just appeared may be
// empty for a moment while its writer sets it up: errors are retried for a few seconds after it appears.
std::unique_ptr<EventStore> wait_for_store(const std::string& location) {
  std::optional<std::chrono::steady_clock::time_point> appeared;
  auto file = sqlite_file_of(location);
  for (;;) {
    try {
      if (auto store = open_for_reading(location)) return store;
    } catch (const Error&) {
      if (!file) throw;
      auto now = std::chrono::steady_clock::now();
      if (!appeared) appeared = now;
      if (now - *appeared > std::chrono::seconds(10)) throw;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

void append_event_json(std::string& out, const RecordedEvent& e) {
  std::size_t start = out.size();
  out.resize(start + LineWriter::json_bound(e));
  out.resize(static_cast<std::size_t>(LineWriter().event_json(out.data() + start, e) - out.data()));
}

int read_command(const Options& o, Io& io) {
  if (o.follow && o.backward) throw UsageError("--follow reads forward, so it cannot be combined with --backward");
  std::uint64_t from = o.from ? parse_count(*o.from, "--from") : 0;
  std::uint64_t count = o.count ? parse_count(*o.count, "--count") : kUnlimited;
  bool all = o.stream == kAllStream;
  std::optional<EventFilter> filter;
  if (!o.category.empty() || !o.types.empty()) {
    if (!all) throw UsageError("--category and --type filter '$all' only");
    filter = EventFilter{.event_types = o.types};
    if (!o.category.empty()) filter->category = o.category;
    // Checked here (the memory engine checks filters like every engine), so a bad one is a usage error.
    try {
      open_memory_store()->read_all({.filter = filter});
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
  }
  if (!all) {
    if (auto problem = stream_id_problem(o.stream)) throw UsageError("invalid stream id: " + *problem);
  }

  auto store = open_for_reading(o.store);
  if (!store) {
    // No store yet: it reads as empty; a follower waits for it.
    if (!o.follow) {
      if (all) return kOk;
      throw StreamNotFound(o.stream);
    }
    store = wait_for_store(o.store);
  }
  auto file = sqlite_file_of(o.store);
  FileIdentity identity = file ? FileIdentity::of(*file) : FileIdentity{};

  LineBuffer out(io.out);
  LineWriter writer;
  bool text = o.format == "text";
  Direction dir = o.backward ? Direction::backward : Direction::forward;
  bool has_from = o.from.has_value();
  // The next key (position for $all, version for a stream) to read, and how many events are left.
  std::uint64_t next = from;
  std::uint64_t left = count;
  auto print_from = [&](bool must_exist) {
    auto reader = all ? store->read_all({.direction = dir,
                                         .from = has_from || o.follow ? std::optional(Position(next)) : std::nullopt,
                                         .max_count = left,
                                         .filter = filter})
                      : store->read_stream(
                            o.stream, {.direction = dir,
                                       .from = has_from || o.follow ? std::optional(StreamVersion(next)) : std::nullopt,
                                       .max_count = left});
    if (reader.state() == EventReader::State::stream_not_found) {
      if (must_exist) throw StreamNotFound(o.stream);
      return;
    }
    while (const RecordedEvent* e = reader.next()) {
      if (text) {
        out.done(writer.event_text(out.room(LineWriter::text_bound(*e)), *e));
      } else {
        out.done(writer.event_json(out.room(LineWriter::json_bound(*e)), *e));
      }
      next = (all ? e->position.value() : e->version.value()) + 1;
      --left;
    }
    // A filtered read looked further than its last event: the next one starts after that.
    if (filter && dir == Direction::forward) next = std::max(next, reader.scanned_through() + 1);
    out.flush();
  };
  // Following: the head is taken before the first read, so an event appended in between wakes us.
  Position seen = o.follow ? store->head_position() : Position(0);
  print_from(!o.follow);
  while (o.follow && left > 0) {
    Position head = store->wait_for_events_after(seen, std::chrono::seconds(1));
    if (file && FileIdentity::of(*file) != identity) {
      throw StorageError(fmt::format(
          "the store file '{}' was deleted or replaced while it was followed; stopped after the events printed "
          "(run the command again to follow the new file)",
          *file));
    }
    if (head <= seen) continue;
    seen = head;
    print_from(false);
  }
  out.flush();
  return kOk;
}

}  // namespace sourced::cli
