#include "cli.hpp"

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sourced/memory_store.hpp"
#include "sourced/open_store.hpp"
#include "sourced/store.hpp"

namespace sourced::cli {
namespace {

using json = nlohmann::json;

// Input the user got wrong, reported with exit code 2 before the store is touched.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return kUsage;
    case ErrorCode::duplicate_event_id:
      return kUsage;
    case ErrorCode::wrong_expected_version:
      return kWrongVersion;
    case ErrorCode::stream_not_found:
      return kStreamNotFound;
    case ErrorCode::stream_deleted:
      return kStreamDeleted;
    case ErrorCode::serialization:
    case ErrorCode::connection:
    case ErrorCode::storage:
      return kFailure;
  }
  return kFailure;
}

ExpectedVersion parse_expected(const std::string& text) {
  auto e = ExpectedVersion::parse(text);
  if (!e) {
    throw UsageError(
        fmt::format("--expected must be any, no_stream, stream_exists or a version number, not '{}'", text));
  }
  return *e;
}

Uuid parse_uuid(const std::string& text, std::string_view what) {
  auto id = Uuid::parse(text);
  if (!id) throw UsageError(fmt::format("{} '{}' is not a UUID (expected 8-4-4-4-12 hex digits)", what, text));
  return *id;
}

// Checks that `text` is JSON and returns it compacted.
std::string require_json(const std::string& text, std::string_view what) {
  try {
    return json::parse(text).dump();
  } catch (const json::parse_error& e) {
    throw UsageError(fmt::format("{} is not valid JSON: {}", what, e.what()));
  }
}

// Bytes that hold JSON print as JSON; anything else prints as a string.
json as_json(const std::string& bytes) {
  if (bytes.empty()) return nullptr;
  json parsed = json::parse(bytes, nullptr, false);
  if (!parsed.is_discarded()) return parsed;
  return json(bytes);
}

// Appends `bytes` to `line` as a JSON value: the bytes themselves when they are one line of JSON (the
// common case, no parse tree built), re-encoded JSON when they span lines, a string otherwise.
void append_value(std::string& line, const std::string& bytes) {
  if (bytes.empty()) {
    line += "null";
  } else if (bytes.find_first_of("\r\n") == std::string::npos && json::accept(bytes)) {
    line += bytes;
  } else {
    line += as_json(bytes).dump();
  }
}

// One event as a line of JSON, fields in a reading order (the stream, its coordinates, then the payload).
std::string event_line(const RecordedEvent& e) {
  std::string line = "{\"stream\":";
  line += json(e.stream).dump();
  line += fmt::format(",\"version\":{},\"position\":{},\"id\":\"{}\",\"type\":", e.version.value(), e.position.value(),
                      e.id.to_string());
  line += json(e.type).dump();
  line += ",\"data\":";
  append_value(line, e.data);
  line += ",\"metadata\":";
  append_value(line, e.metadata);
  line += fmt::format(",\"created_at\":\"{}\"", format_timestamp(e.created_at));
  if (e.correlation_id) line += fmt::format(",\"correlation_id\":\"{}\"", e.correlation_id->to_string());
  if (e.causation_id) line += fmt::format(",\"causation_id\":\"{}\"", e.causation_id->to_string());
  line += "}\n";
  return line;
}

// One event for a person: position, stream@version, type, time, then the data on the same line.
std::string text_line(const RecordedEvent& e) {
  std::string data = e.data;
  for (char& c : data) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return fmt::format("#{:<8} {}@{} {} {} {}\n", e.position.value(), e.stream, e.version.value(), e.type,
                     format_timestamp(e.created_at), data);
}

const char* status_name(StreamStatus s) {
  switch (s) {
    case StreamStatus::active:
      return "active";
    case StreamStatus::soft_deleted:
      return "soft_deleted";
    case StreamStatus::tombstoned:
      return "tombstoned";
  }
  return "?";
}

json info_json(const StreamInfo& i) {
  return {{"stream", i.stream},
          {"last_version", i.last_version.value()},
          {"event_count", i.event_count},
          {"status", status_name(i.status)},
          {"created_at", format_timestamp(i.created_at)},
          {"updated_at", format_timestamp(i.updated_at)}};
}

// One event from a JSON line of `sourced append` without --type.
EventData event_from_json_line(const std::string& line, std::size_t number) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::parse_error& e) {
    throw UsageError(fmt::format("stdin line {} is not valid JSON: {}", number, e.what()));
  }
  if (!j.is_object()) throw UsageError(fmt::format("stdin line {} must be a JSON object", number));
  auto text_field = [&](const char* name) -> std::optional<std::string> {
    if (!j.contains(name) || j[name].is_null()) return std::nullopt;
    if (!j[name].is_string()) throw UsageError(fmt::format("stdin line {}: \"{}\" must be a string", number, name));
    return j[name].get<std::string>();
  };
  EventData e;
  auto type = text_field("type");
  if (!type) throw UsageError(fmt::format("stdin line {}: \"type\" is required", number));
  e.type = *type;
  e.data = j.contains("data") ? j["data"].dump() : "{}";
  e.metadata = j.contains("metadata") ? j["metadata"].dump() : "{}";
  std::string where = fmt::format("stdin line {}: \"", number);
  if (auto id = text_field("id")) e.id = parse_uuid(*id, where + "id\"");
  if (auto id = text_field("correlation_id")) e.correlation_id = parse_uuid(*id, where + "correlation_id\"");
  if (auto id = text_field("causation_id")) e.causation_id = parse_uuid(*id, where + "causation_id\"");
  return e;
}

bool is_sqlite_path(const std::string& location) {
  return location != "memory:" && !location.starts_with("postgres://") && !location.starts_with("postgresql://");
}

}  // namespace

int run(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err) {
  CLI::App app{"sourced: an event store. Output is JSON (one object per line for lists).", "sourced"};
  app.footer(
      "Exit codes: 0 ok; 1 failure (I/O, server); 2 usage or invalid input; 3 wrong expected version;\n"
      "4 stream not found; 5 stream deleted (tombstoned).");
  app.require_subcommand(1);
  std::string store_location = "./sourced.db";
  app.add_option("--store", store_location, "SQLite file, postgres:// URL or memory:")
      ->envname("SOURCED_STORE")
      ->capture_default_str();

  std::string stream, type, data = "{}", metadata = "{}", id, correlation_id, causation_id, expected = "any";
  auto* append = app.add_subcommand("append", "Append events to a stream (from --type/--data, or JSON lines on stdin)");
  append->add_option("stream", stream, "Stream id")->required();
  append->add_option("--type", type, "Event type; without it, events are read as JSON lines from stdin");
  append->add_option("--data", data, "Event data (JSON)")->capture_default_str();
  append->add_option("--metadata", metadata, "Event metadata (JSON)")->capture_default_str();
  append->add_option("--id", id, "Event id (UUID); repeating an append with the same id is a no-op");
  append->add_option("--correlation-id", correlation_id, "Correlation id (UUID)");
  append->add_option("--causation-id", causation_id, "Causation id (UUID)");
  append->add_option("--expected", expected, "any | no_stream | stream_exists | VERSION")->capture_default_str();

  std::uint64_t from = 0, count = kUnlimited;
  bool backward = false;
  auto* read = app.add_subcommand("read", "Read a stream or '$all' as JSON lines");
  read->add_option("stream", stream, "Stream id, or '$all' for the global log")->required();
  auto* from_opt = read->add_option("--from", from, "First version (or position for $all) to read, inclusive");
  read->add_option("--count", count, "Most events to read");
  read->add_flag("--backward", backward, "Read from the end towards the start");
  bool follow = false;
  read->add_flag("--follow", follow,
                 "After the last event, wait for new ones and print them as they come (Ctrl-C stops)");
  std::string format = "json";
  read->add_option("--format", format, "json: one JSON object per line; text: one readable line per event")
      ->check(CLI::IsMember({"json", "text"}))
      ->capture_default_str();
  std::string category;
  std::vector<std::string> types;
  read->add_option("--category", category, "$all only: events of streams in this category (the id before '-')");
  read->add_option("--type", types, "$all only: events of this type (repeat for several)");

  auto* streams = app.add_subcommand("streams", "List streams as JSON lines");
  auto* info = app.add_subcommand("info", "Show one stream's version, event count and state");
  info->add_option("stream", stream, "Stream id")->required();

  bool tombstone = false;
  auto* del = app.add_subcommand("delete", "Delete a stream (soft by default)");
  del->add_option("stream", stream, "Stream id")->required();
  del->add_flag("--tombstone", tombstone, "Delete permanently: the stream can never be written or read again");
  del->add_option("--expected", expected, "any | no_stream | stream_exists | VERSION")->capture_default_str();

  auto* stats = app.add_subcommand("stats", "Show the store's engine, stream and event counts and head position");
  auto* init = app.add_subcommand(
      "init", "Create the store or bring its schema up to date (idempotent; opening a store for writing also does it)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::ParseError& e) {
    err << "sourced: " << e.what() << "\n";
    return kUsage;
  }

  try {
    // Everything the user typed is checked before the store is opened, so bad input never creates,
    // migrates or changes a store.
    ExpectedVersion ev = ExpectedVersion::any();
    if (append->parsed() || del->parsed()) ev = parse_expected(expected);
    if (read->parsed() && follow && backward) {
      throw UsageError("--follow reads forward, so it cannot be combined with --backward");
    }
    std::optional<EventFilter> filter;
    if (read->parsed() && (!category.empty() || !types.empty())) {
      if (stream != kAllStream) throw UsageError("--category and --type filter '$all' only");
      filter = EventFilter{.event_types = types};
      if (!category.empty()) filter->category = category;
      // Checked here (the memory engine checks filters like every engine), so a bad one is a usage error.
      try {
        open_memory_store()->read_all({.filter = filter});
      } catch (const InvalidArgument& e) {
        throw UsageError(e.what());
      }
    }
    if ((del->parsed() || append->parsed()) && stream_id_problem(stream)) {
      throw UsageError("invalid stream id: " + *stream_id_problem(stream));
    }
    std::vector<EventData> events;
    if (append->parsed()) {
      if (is_system_stream(stream)) {
        throw UsageError("stream '" + stream + "' is reserved for the system: ids starting with '$' cannot be written");
      }
      if (!type.empty()) {
        EventData e;
        e.type = type;
        e.data = require_json(data, "--data");
        e.metadata = require_json(metadata, "--metadata");
        if (!id.empty()) e.id = parse_uuid(id, "--id");
        if (!correlation_id.empty()) e.correlation_id = parse_uuid(correlation_id, "--correlation-id");
        if (!causation_id.empty()) e.causation_id = parse_uuid(causation_id, "--causation-id");
        events.push_back(std::move(e));
      } else {
        std::string line;
        std::size_t number = 0;
        while (std::getline(in, line)) {
          ++number;
          if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
          events.push_back(event_from_json_line(line, number));
        }
        if (events.empty()) throw UsageError("no events: give --type and --data, or JSON lines on stdin");
      }
      // The CLI names every event so it can print the ids; ids it makes are time-ordered like the store's.
      for (auto& e : events) {
        if (!e.id) e.id = Uuid::v7();
      }
    }

    bool writes = append->parsed() || del->parsed() || init->parsed() || follow;
    std::string sqlite_path = store_location.starts_with("sqlite:") ? store_location.substr(7) : store_location;
    bool missing_file = is_sqlite_path(store_location) && !std::filesystem::exists(sqlite_path);
    std::unique_ptr<EventStore> store;
    if (!writes && missing_file) {
      // Reading must not create a file: a store that does not exist yet reads as empty.
      store = open_memory_store();
    } else {
      store = open_store(store_location);
    }

    if (append->parsed()) {
      auto r = store->append(stream, ev, events);
      json ids = json::array();
      for (const auto& e : events) ids.push_back(e.id->to_string());
      out << json{{"stream", stream},
                  {"first_version", r.first_version.value()},
                  {"last_version", r.last_version.value()},
                  {"first_position", r.first_position.value()},
                  {"last_position", r.last_position.value()},
                  {"replayed", r.replayed},
                  {"ids", ids}}
                 .dump()
          << "\n";
    } else if (read->parsed()) {
      Direction dir = backward ? Direction::backward : Direction::forward;
      bool has_from = from_opt->count() > 0;
      bool all = stream == kAllStream;
      // The next key (position for $all, version for a stream) to read, and how many events are left.
      std::uint64_t next = has_from ? from : 0;
      std::uint64_t left = count;
      auto print_from = [&](bool must_exist) {
        auto reader = all ? store->read_all({.direction = dir,
                                             .from = has_from || follow ? std::optional(Position(next)) : std::nullopt,
                                             .max_count = left,
                                             .filter = filter})
                          : store->read_stream(
                                stream, {.direction = dir,
                                         .from = has_from || follow ? std::optional(StreamVersion(next)) : std::nullopt,
                                         .max_count = left});
        if (reader.state() == EventReader::State::stream_not_found) {
          if (must_exist) throw StreamNotFound(stream);
          return;
        }
        while (const RecordedEvent* e = reader.next()) {
          if (!(out << (format == "text" ? text_line(*e) : event_line(*e)))) {
            throw std::runtime_error("could not write the output");
          }
          next = (all ? e->position.value() : e->version.value()) + 1;
          --left;
        }
        // A filtered read looked further than its last event: the next one starts after that.
        if (filter && dir == Direction::forward) next = std::max(next, reader.scanned_through() + 1);
        out.flush();
      };
      // Following: the head is taken before the first read, so an event appended in between wakes us.
      Position seen = follow ? store->head_position() : Position(0);
      print_from(!follow);
      while (follow && left > 0) {
        Position head = store->wait_for_events_after(seen, std::chrono::seconds(1));
        if (head <= seen) continue;
        seen = head;
        print_from(false);
      }
    } else if (streams->parsed()) {
      std::string after;
      for (;;) {
        auto page = store->list_streams(after, 1000);
        for (const auto& i : page) out << info_json(i).dump() << "\n";
        if (page.size() < 1000) break;
        after = page.back().stream;
      }
    } else if (info->parsed()) {
      auto i = store->stream_info(stream);
      if (!i) throw StreamNotFound(stream);
      out << info_json(*i).dump() << "\n";
    } else if (del->parsed()) {
      store->delete_stream(stream, ev, tombstone ? DeleteMode::tombstone : DeleteMode::soft);
      out << json{{"stream", stream}, {"deleted", tombstone ? "tombstone" : "soft"}}.dump() << "\n";
    } else if (init->parsed()) {
      // Opening the store created or migrated it; report what is there.
      auto s = store->stats();
      out << json{{"initialized", true},
                  {"engine", s.engine},
                  {"streams", s.streams},
                  {"head_position", s.head.value()}}
                 .dump()
          << "\n";
    } else if (stats->parsed()) {
      auto s = store->stats();
      out << json{{"engine", missing_file ? "sqlite" : s.engine},
                  {"streams", s.streams},
                  {"head_position", s.head.value()}}
                 .dump()
          << "\n";
    }
    out.flush();
    if (!out) {
      err << "sourced: could not write the output\n";
      return kFailure;
    }
    return kOk;
  } catch (const UsageError& e) {
    err << "sourced: " << e.what() << "\n";
    return kUsage;
  } catch (const Error& e) {
    err << "sourced: " << e.what() << "\n";
    return exit_code_for(e.code());
  } catch (const std::exception& e) {
    err << "sourced: " << e.what() << "\n";
    return kFailure;
  }
}

}  // namespace sourced::cli
