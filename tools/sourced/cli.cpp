#include "cli.hpp"

#include <charconv>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.hpp"
#include "json_text.hpp"

namespace sourced::cli {
namespace {

int exit_code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return kUsage;
    case ErrorCode::duplicate_event_id:
      return kDuplicateEventId;
    case ErrorCode::wrong_expected_version:
      return kWrongVersion;
    case ErrorCode::stream_not_found:
      return kStreamNotFound;
    case ErrorCode::stream_deleted:
      return kStreamDeleted;
    case ErrorCode::subscription_not_found:
      return kSubscriptionNotFound;
    case ErrorCode::subscription_exists:
      return kSubscriptionExists;
    case ErrorCode::subscription_locked:
      return kSubscriptionHeld;
    default:
      return kFailure;
  }
}

// An option bound to a std::optional<std::string>: empty unless given.
CLI::Option* add_optional(CLI::App* app, const std::string& name, std::optional<std::string>& target,
                          const std::string& help) {
  return app->add_option_function<std::string>(
      name, [&target](const std::string& v) { target = v; }, help);
}

}  // namespace

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

std::uint64_t parse_count(const std::string& text, std::string_view what) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    throw UsageError(fmt::format("{} must be a whole number from 0 to {}, not '{}'", what, kUnlimited, text));
  }
  return v;
}

int run(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err) {
  CLI::App app{"sourced: an event store. Output is JSON (one object per line for lists).", "sourced"};
  app.footer(fmt::format(
      "Exit codes: 0 ok; 1 failure (I/O, server); 2 usage or invalid input; 3 wrong expected version;\n"
      "4 stream not found; 5 stream deleted (tombstoned); 6 an event id is already stored elsewhere;\n"
      "7 the append was committed but its result could not be written to stdout (it is on stderr: do not\n"
      "retry); 8 no such subscription; 9 the subscription exists already; 10 another consumer holds the\n"
      "subscription. JSON input (--data, --metadata, stdin lines) is stored as given; it may nest {} levels.\n"
      "Event data that is not JSON is printed as \"data_base64\" (the same for metadata).",
      kMaxJsonDepth));
  app.require_subcommand(1);
  Options o;
  app.add_option("--store", o.store, "SQLite file, postgres:// URL or memory: (empty, read-only)")
      ->envname("SOURCED_STORE")
      ->capture_default_str();

  auto* append = app.add_subcommand(
      "append", "Append events to a stream: one from --type/--data, or JSON lines on stdin (without --type)");
  append->add_option("stream", o.stream, "Stream id")->required();
  add_optional(append, "--type", o.type, "Event type; without it, events are read as JSON lines from stdin");
  add_optional(append, "--data", o.data, "Event data (JSON, stored as given; default {})");
  add_optional(append, "--metadata", o.metadata, "Event metadata (JSON, stored as given; default {})");
  add_optional(append, "--id", o.id, "Event id (UUID); repeating an append with the same id is a no-op");
  add_optional(append, "--correlation-id", o.correlation_id, "Correlation id (UUID)");
  add_optional(append, "--causation-id", o.causation_id, "Causation id (UUID)");
  append->add_option("--expected", o.expected, "any | no_stream | stream_exists | VERSION")->capture_default_str();

  auto* read = app.add_subcommand("read", "Read a stream or '$all' as JSON lines");
  read->add_option("stream", o.stream, "Stream id, or '$all' for the global log")->required();
  add_optional(read, "--from", o.from, "First version (or position for $all) to read, inclusive");
  add_optional(read, "--count", o.count, "Most events to read");
  read->add_flag("--backward", o.backward, "Read from the end towards the start");
  read->add_flag("--follow", o.follow,
                 "After the last event, wait for new ones and print them as they come (Ctrl-C stops); "
                 "a missing store is waited for; a store file deleted meanwhile stops it (exit 1)");
  read->add_option("--format", o.format, "json: one JSON object per line; text: one readable line per event")
      ->check(CLI::IsMember({"json", "text"}))
      ->capture_default_str();
  read->add_option("--category", o.category, "$all only: events of streams in this category (the id before '-')");
  read->add_option("--type", o.types, "$all only: events of this type (repeat for several)");

  auto* streams = app.add_subcommand("streams", "List streams as JSON lines");
  auto* info = app.add_subcommand("info", "Show one stream's version, event count and state");
  info->add_option("stream", o.stream, "Stream id")->required();

  auto* del = app.add_subcommand("delete", "Delete a stream (soft by default)");
  del->add_option("stream", o.stream, "Stream id")->required();
  del->add_flag("--tombstone", o.tombstone, "Delete permanently: the stream can never be written or read again");
  del->add_option("--expected", o.expected, "any | no_stream | stream_exists | VERSION")->capture_default_str();

  auto* stats = app.add_subcommand("stats", "Show the store's engine, stream count and head position");
  auto* subscription = app.add_subcommand("subscription", "Manage and consume a persistent subscription");
  subscription->require_subcommand(1);
  auto* sub_create = subscription->add_subcommand("create", "Create a persistent subscription to '$all' or a stream");
  sub_create->add_option("name", o.subscription, "Subscription name")->required();
  sub_create->add_option("--stream", o.source_stream, "The stream to read (default: '$all')");
  sub_create->add_option("--category", o.category, "$all only: events of streams in this category");
  sub_create->add_option("--type", o.types, "$all only: events of this type (repeat for several)");
  add_optional(sub_create, "--from", o.from,
               "start (default) | end (only events appended from now) | POSITION (or VERSION for a stream): the "
               "first to deliver, inclusive");
  add_optional(sub_create, "--max-in-flight", o.max_in_flight, "Most events delivered and not acknowledged (100)");
  add_optional(sub_create, "--max-attempts", o.max_attempts, "Deliveries of one event before it is parked (10)");
  auto* sub_delete = subscription->add_subcommand("delete", "Delete a subscription and its parked events");
  sub_delete->add_option("name", o.subscription, "Subscription name")->required();
  auto* sub_info = subscription->add_subcommand("info", "Show a subscription: source, checkpoint, lag, holder");
  sub_info->add_option("name", o.subscription, "Subscription name")->required();
  auto* sub_parked = subscription->add_subcommand("parked", "List a subscription's parked events as JSON lines");
  sub_parked->add_option("name", o.subscription, "Subscription name")->required();
  auto* sub_replay =
      subscription->add_subcommand("replay-parked", "Deliver a subscription's parked events again (before new ones)");
  sub_replay->add_option("name", o.subscription, "Subscription name")->required();
  auto* sub_consume = subscription->add_subcommand(
      "consume",
      "Consume a subscription: print each event as a JSON line (as `read`) and acknowledge it once printed; "
      "SIGINT/SIGTERM stop it (exit 0)");
  sub_consume->add_option("name", o.subscription, "Subscription name")->required();
  add_optional(sub_consume, "--count", o.count,
               "Stop after this many events settled: handled, or (with --exec) parked after their last attempt");
  sub_consume->add_flag("--wait", o.wait, "When another consumer holds it, wait for it (else exit 10 at once)");
  add_optional(sub_consume, "--exec", o.exec,
               "Run CMD (with sh -c) for each event, its JSON line on stdin: exit 0 acknowledges it, anything "
               "else fails it (retried, then parked)");
  auto* subscriptions = app.add_subcommand(
      "subscriptions", "List persistent subscriptions as JSON lines (source, checkpoint, head, lag, holder)");

  auto* projections =
      app.add_subcommand("projections",
                         "List the projections recorded in a read-model database as JSON lines (checkpoint, head, lag, "
                         "status, open errors)");
  // --store after the subcommand as well: `sourced projections --store EVENTS --models DB`.
  projections->add_option("--store", o.store, "The event store (SQLite file or postgres:// URL)");
  add_optional(projections, "--models", o.models,
               "The read-model database (SQLite file or postgres:// URL; default: --store)");

  auto* init = app.add_subcommand(
      "init", "Create the store or bring its schema up to date (idempotent; opening a store for writing also does it)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, out, err);
  } catch (const CLI::ParseError& e) {
    err << "sourced: " << redact(e.what(), o.store) << "\n";
    return kUsage;
  }

  Io io{in, out, err};
  try {
    if (append->parsed()) return append_command(o, io);
    if (read->parsed()) return read_command(o, io);
    if (streams->parsed()) return streams_command(o, io);
    if (info->parsed()) return info_command(o, io);
    if (del->parsed()) return delete_command(o, io);
    if (stats->parsed()) return stats_command(o, io);
    if (init->parsed()) return init_command(o, io);
    if (sub_create->parsed()) return subscription_create_command(o, io);
    if (sub_delete->parsed()) return subscription_delete_command(o, io);
    if (sub_info->parsed()) return subscription_info_command(o, io);
    if (sub_parked->parsed()) return subscription_parked_command(o, io);
    if (sub_replay->parsed()) return subscription_replay_command(o, io);
    if (sub_consume->parsed()) return subscription_consume_command(o, io);
    if (subscriptions->parsed()) return subscriptions_command(o, io);
    if (projections->parsed()) return projections_command(o, io);
    return kUsage;
  } catch (const UsageError& e) {
    err << "sourced: " << redact(e.what(), o.store) << "\n";
    return kUsage;
  } catch (const Error& e) {
    err << "sourced: " << redact(e.what(), o.store) << "\n";
    return exit_code_for(e.code());
  } catch (const std::exception& e) {
    err << "sourced: " << redact(e.what(), o.store) << "\n";
    return kFailure;
  }
}

}  // namespace sourced::cli
