// `sourced streams`, `info`, `delete`, `stats` and `init`.

#include <ostream>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "commands.hpp"

namespace sourced::cli {
namespace {

using json = nlohmann::json;

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

json stats_json(const std::string& engine, const StoreStats& s) {
  return {{"engine", engine}, {"streams", s.streams}, {"head_position", s.head.value()}};
}

void check_stream(const std::string& stream) {
  if (auto problem = stream_id_problem(stream)) throw UsageError("invalid stream id: " + *problem);
}

}  // namespace

int streams_command(const Options& o, Io& io) {
  auto store = open_for_reading(o.store);
  if (!store) return kOk;  // no store: no streams
  Output out(io.out);
  std::string after;
  for (;;) {
    auto page = store->list_streams(after, 1000);
    for (const auto& i : page) {
      out.buffer() += info_json(i).dump();
      out.buffer() += '\n';
      out.line_done();
    }
    if (page.size() < 1000) break;
    after = page.back().stream;
  }
  out.flush();
  return kOk;
}

int info_command(const Options& o, Io& io) {
  check_stream(o.stream);
  auto store = open_for_reading(o.store);
  auto i = store ? store->stream_info(o.stream) : std::nullopt;
  if (!i) throw StreamNotFound(o.stream);
  Output out(io.out);
  out.buffer() += info_json(*i).dump() + "\n";
  out.flush();
  return kOk;
}

int delete_command(const Options& o, Io& io) {
  ExpectedVersion expected = parse_expected(o.expected);
  check_stream(o.stream);
  auto store = open_for_writing(o.store, "delete");
  store->delete_stream(o.stream, expected, o.tombstone ? DeleteMode::tombstone : DeleteMode::soft);
  Output out(io.out);
  out.buffer() += json{{"stream", o.stream}, {"deleted", o.tombstone ? "tombstone" : "soft"}}.dump() + "\n";
  out.flush();
  return kOk;
}

int stats_command(const Options& o, Io& io) {
  auto store = open_for_reading(o.store);
  StoreStats s;
  if (store) s = store->stats();
  Output out(io.out);
  out.buffer() += stats_json(store ? s.engine : engine_of(o.store), s).dump() + "\n";
  out.flush();
  return kOk;
}

int init_command(const Options& o, Io& io) {
  // Opening the store for writing creates or migrates it; report what is there.
  auto store = open_for_writing(o.store, "init");
  auto s = store->stats();
  json j = {{"initialized", true}};
  j.update(stats_json(s.engine, s));
  Output out(io.out);
  out.buffer() += j.dump() + "\n";
  out.flush();
  return kOk;
}

}  // namespace sourced::cli
