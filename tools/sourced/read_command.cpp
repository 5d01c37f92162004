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

// Builds output lines in the Output's buffer without temporaries: the read path prints every event.
class LineWriter {
 public:
  explicit LineWriter(std::string& out) : out_(out) {}

  void number(std::uint64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out_.append(buf, end);
  }

  // Seconds change rarely between consecutive events: their text is made once.
  void timestamp(Timestamp t) {
    auto secs = std::chrono::floor<std::chrono::seconds>(t);
    if (secs != cached_secs_ || cached_.empty()) {
      cached_secs_ = secs;
      cached_ = format_timestamp(secs).substr(0, 20);  // "YYYY-MM-DDTHH:MM:SS."
    }
    out_ += cached_;
    auto micros = static_cast<unsigned>((t - secs).count());
    char buf[7];
    for (int i = 5; i >= 0; --i, micros /= 10) buf[i] = static_cast<char>('0' + micros % 10);
    buf[6] = 'Z';
    out_.append(buf, 7);
  }

  // Written in place (Uuid::to_string makes a string per call: every event has an id).
  void uuid(const Uuid& id) {
    static constexpr char kHex[] = "0123456789abcdef";
    char buf[38];
    char* p = buf;
    *p++ = '"';
    const auto& b = id.bytes();
    for (int i = 0; i < 16; ++i) {
      if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
      *p++ = kHex[b[i] >> 4];
      *p++ = kHex[b[i] & 0xF];
    }
    *p++ = '"';
    out_.append(buf, p);
  }

  // `"name":bytes` when the bytes are JSON (CR and LF, which valid JSON holds only as whitespace, become
  // spaces so the event stays on one line); `"name_base64":"..."` otherwise; nothing for no bytes. Bytes
  // of an event appended as ContentType::json are taken as JSON unchecked: the check was the writer's,
  // once. Others (unknown: stored before content types; binary: metadata may still be JSON) are checked.
  void payload(std::string_view name, const std::string& bytes, bool json) {
    if (bytes.empty()) return;
    out_ += ",\"";
    out_ += name;
    if (!json && json_problem(bytes)) {
      out_ += "_base64\":\"";
      append_base64(out_, bytes);
      out_ += '"';
      return;
    }
    out_ += "\":";
    std::size_t start = out_.size();
    out_ += bytes;
    if (std::memchr(bytes.data(), '\n', bytes.size()) || std::memchr(bytes.data(), '\r', bytes.size())) {
      for (std::size_t i = start; i < out_.size(); ++i) {
        if (out_[i] == '\n' || out_[i] == '\r') out_[i] = ' ';
      }
    }
  }

  void event_json(const RecordedEvent& e) {
    out_ += "{\"stream\":";
    append_json_string(out_, e.stream);
    out_ += ",\"version\":";
    number(e.version.value());
    out_ += ",\"position\":";
    number(e.position.value());
    out_ += ",\"id\":";
    uuid(e.id);
    out_ += ",\"type\":";
    append_json_string(out_, e.type);
    bool json = e.content_type == ContentType::json;
    payload("data", e.data, json);
    payload("metadata", e.metadata, json);
    out_ += ",\"created_at\":\"";
    timestamp(e.created_at);
    out_ += '"';
    if (e.correlation_id) {
      out_ += ",\"correlation_id\":";
      uuid(*e.correlation_id);
    }
    if (e.causation_id) {
      out_ += ",\"causation_id\":";
      uuid(*e.causation_id);
    }
    out_ += "}\n";
  }

  // One event for a person: position, stream@version, type, time, then the data on the same line.
  void event_text(const RecordedEvent& e) {
    out_ += '#';
    std::size_t start = out_.size();
    number(e.position.value());
    if (out_.size() - start < 8) out_.append(8 - (out_.size() - start), ' ');
    out_ += ' ';
    out_ += e.stream;
    out_ += '@';
    number(e.version.value());
    out_ += ' ';
    out_ += e.type;
    out_ += ' ';
    timestamp(e.created_at);
    out_ += ' ';
    std::size_t data_start = out_.size();
    out_ += e.data;
    for (std::size_t i = data_start; i < out_.size(); ++i) {
      if (out_[i] == '\n' || out_[i] == '\r') out_[i] = ' ';
    }
    out_ += '\n';
  }

 private:
  std::string& out_;
  std::chrono::sys_seconds cached_secs_{};
  std::string cached_;
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

void append_event_json(std::string& out, const RecordedEvent& e) { LineWriter(out).event_json(e); }

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

  Output out(io.out);
  LineWriter writer(out.buffer());
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
        writer.event_text(*e);
      } else {
        writer.event_json(*e);
      }
      out.line_done();
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
