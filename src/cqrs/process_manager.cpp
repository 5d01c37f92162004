#include "sourced/process_manager.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "store/subscription_rules.hpp"
#include "subscription_filter.hpp"

namespace sourced {

namespace {
constexpr std::string_view kStateType = "$process-state";
constexpr std::string_view kRejectedType = "$process-rejected";
constexpr std::string_view kStoppedType = "$process-stopped";
// The name space of process managers' command ids (a v5 id of the DNS name space and "sourced.process").
const Uuid& process_namespace() {
  static const Uuid ns = Uuid::v5(*Uuid::parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), "sourced.process");
  return ns;
}
}  // namespace

Uuid process_command_id(std::string_view name, const Uuid& event_id, std::uint64_t index) {
  return Uuid::v5(process_namespace(), fmt::format("{}\n{}\n{}", name, event_id.to_string(), index));
}

namespace detail {
namespace {
// A record's id: one per (event, kind, index), so appending it again after a crash is the store's
// idempotent repeat rather than a second record.
Uuid record_id(const RecordedEvent& event, std::string_view kind, std::uint64_t index = 0) {
  return Uuid::v5(event.id, fmt::format("{}\n{}", kind, index));
}

ExpectedVersion expected_of(StreamVersion loaded) {
  return loaded.value() == 0 ? ExpectedVersion::no_stream() : ExpectedVersion::exact(loaded);
}

StreamVersion append_record(EventStore& store, const std::string& stream, StreamVersion expected, EventData record) {
  record.content_type = ContentType::json;
  return store.append(stream, expected_of(expected), {record}).last_version;
}

std::string where(const RecordedEvent& e) {
  return fmt::format("{} version {} position {}", e.stream, e.version.value(), e.position.value());
}
}  // namespace

void check_process_manager_name(std::string_view name) {
  validate_subscription_name(name);
  // Instance streams are `<prefix><name>-<key>`: with a '-' in names, process manager "a" with key "b-x"
  // and "a-b" with key "x" would share `process-a-b-x`, each loading the other's state.
  if (name.find('-') != std::string_view::npos) {
    throw InvalidArgument(fmt::format(
        "process manager name '{}' contains '-': its instance streams (<prefix>{}-<key>) could be another process "
        "manager's; use '_' or '.' instead",
        name, name));
  }
}

ProcessInstanceRecord load_process_instance(EventStore& store, const std::string& stream) {
  ProcessInstanceRecord out;
  ReadStreamOptions backward;
  backward.direction = Direction::backward;
  EventReader reader = store.read_stream(stream, backward);
  if (reader.state() == EventReader::State::stream_not_found) return out;
  bool first = true;
  while (const RecordedEvent* e = reader.next()) {
    if (first) out.version = e->version;
    first = false;
    try {
      auto data = nlohmann::json::parse(e->data);
      if (e->type == kRejectedType) {
        auto id = Uuid::parse(data.at("event_id").get<std::string>());
        if (!id) throw std::invalid_argument("event_id is not a UUID");
        out.rejections.push_back({*id, data.at("index").get<std::uint64_t>(), data.at("reason").get<std::string>()});
        continue;
      }
      if (e->type == kStateType) {
        out.running = true;
        out.state = data.at("state").dump();
      } else if (e->type == kStoppedType) {
        out.stopped = true;
      } else {
        throw std::invalid_argument("unknown record type " + e->type);
      }
      out.position = Position(data.at("position").get<std::uint64_t>());
      return out;
    } catch (const std::exception& x) {
      // A record this code did not write: guessing would risk repeating or skipping commands.
      throw SerializationError(fmt::format("process instance stream {}: cannot read record at version {} ({}): {}",
                                           stream, e->version.value(), e->type, x.what()));
    }
  }
  return out;
}

StreamVersion save_process_state(EventStore& store, const std::string& stream, StreamVersion expected,
                                 const std::string& state, const RecordedEvent& event) {
  EventData r;
  r.id = record_id(event, kStateType);
  r.type = std::string(kStateType);
  r.data = nlohmann::json{{"state", nlohmann::json::parse(state)},
                          {"position", event.position.value()},
                          {"event_id", event.id.to_string()},
                          {"event", where(event)}}
               .dump();
  r.correlation_id = event.correlation_id;
  r.causation_id = event.id;
  return append_record(store, stream, expected, std::move(r));
}

StreamVersion save_process_stopped(EventStore& store, const std::string& stream, StreamVersion expected,
                                   const RecordedEvent& event) {
  EventData r;
  r.id = record_id(event, kStoppedType);
  r.type = std::string(kStoppedType);
  r.data =
      nlohmann::json{{"position", event.position.value()}, {"event_id", event.id.to_string()}, {"event", where(event)}}
          .dump();
  r.correlation_id = event.correlation_id;
  r.causation_id = event.id;
  return append_record(store, stream, expected, std::move(r));
}

StreamVersion save_process_rejection(EventStore& store, const std::string& stream, StreamVersion expected,
                                     const RecordedEvent& event, std::uint64_t index, std::string_view command_type,
                                     const Rejection& rejection) {
  EventData r;
  r.id = record_id(event, kRejectedType, index);
  r.type = std::string(kRejectedType);
  r.data =
      nlohmann::json{
          {"event_id", event.id.to_string()}, {"index", index}, {"command", command_type}, {"reason", rejection.reason}}
          .dump();
  r.correlation_id = event.correlation_id;
  r.causation_id = event.id;
  return append_record(store, stream, expected, std::move(r));
}

void create_process_subscription(EventStore& store, std::string_view name, const ProcessManagerOptions& options,
                                 std::vector<std::string> event_types) {
  PersistentSubscriptionSettings settings;
  if (options.filter) {
    settings.filter = *options.filter;
  } else {
    settings.filter.emplace();
    settings.filter->event_types = std::move(event_types);
  }
  settings.start = options.start;
  settings.max_in_flight = 1;  // what `sourced subscriptions` shows; the consumers force it anyway
  settings.max_attempts = options.max_attempts;
  create_persistent_subscription(store, name, settings);
}

void check_process_subscription(EventStore& store, std::string_view name, const ProcessManagerOptions& options,
                                const std::vector<std::string>& event_types) {
  auto info = persistent_subscription_info(store, name);
  if (!info) throw SubscriptionNotFound(std::string(name));
  std::optional<EventFilter> wanted = options.filter;
  if (!wanted) wanted = EventFilter{.event_types = event_types};
  const std::optional<EventFilter>& has = info->config.filter;
  auto refuse = [&](const std::string& why) {
    throw InvalidArgument(fmt::format(
        "process manager {}: its subscription exists and reads {}, but the process manager now reads {}{}; those "
        "events would never reach it (delete the subscription and create it again: instances skip the events "
        "they handled; or widen its filter)",
        name, info->config.stream.empty() ? describe_filter(has) : "the stream " + info->config.stream,
        describe_filter(wanted), why));
  };
  // A subscription made before process managers had one event in flight says 100 in `sourced subscriptions`
  // (the consumers force 1 regardless): once its filter checks out, the stored limit is brought in line.
  auto align_limit = [&] {
    if (info->config.max_in_flight != 1) {
      update_persistent_subscription(store, name, 1, info->config.max_attempts);
    }
  };
  if (!info->config.stream.empty()) refuse("");
  if (!has) return align_limit();  // every event
  if (!wanted || has->category != wanted->category || has->stream_prefix != wanted->stream_prefix) refuse("");
  if (has->event_types.empty()) return align_limit();  // any type
  if (wanted->event_types.empty()) refuse("");
  std::string missing;
  for (const auto& t : wanted->event_types) {
    if (std::find(has->event_types.begin(), has->event_types.end(), t) == has->event_types.end()) missing += " " + t;
  }
  if (!missing.empty()) refuse(" (missing types:" + missing + ")");
  align_limit();
}

std::string process_event_out_of_order(std::string_view name, std::string_view key, const RecordedEvent& event,
                                       Position instance_position) {
  return fmt::format(
      "process manager {}, instance {}: event {} ({}) was parked and the instance has since handled position {}; "
      "replaying it now would apply it out of order, so it stays parked",
      name, key, event.id.to_string(), where(event), instance_position.value());
}

PersistentConsumerOptions process_consumer_options(PersistentConsumerOptions options) {
  options.max_in_flight = 1;
  return options;
}

bool settle_process_delivery(PersistentSubscription& sub, const PersistentDelivery& d,
                             const std::function<void(const PersistentDelivery&)>& handle) {
  try {
    handle(d);
  } catch (const ProcessEventOutOfOrder& e) {
    sub.nack(d.key, e.what(), NackAction::park);
    return false;
  } catch (const std::exception& e) {
    sub.nack(d.key, e.what());
    return false;
  } catch (...) {
    sub.nack(d.key, "unknown exception");
    return false;
  }
  sub.ack(d.key);
  return true;
}

bool run_process_loop(EventStore& store, const std::string& name, const PersistentConsumerOptions& options,
                      const std::function<void(const PersistentDelivery&)>& handle, const std::function<bool()>& done,
                      std::optional<std::chrono::milliseconds> idle, std::chrono::milliseconds timeout,
                      std::stop_token stop, std::uint64_t* handled) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  if (done()) return true;
  std::optional<PersistentSubscription> opened;
  PersistentConsumerOptions o = process_consumer_options(options);
  if (!o.wait_for_lease) {
    opened.emplace(open_persistent_subscription(store, name, o, stop));  // SubscriptionLocked at once
  } else {
    // Short tries rather than one wait of lease_timeout: the caller's timeout and stop bound the wait, and
    // done() may turn true meanwhile (the holder, in another process, finished what the caller waits for).
    constexpr std::chrono::milliseconds kLeaseTry{100};
    const auto give_up = idle ? std::min(deadline, Clock::now() + *idle) : deadline;
    for (;;) {
      if (stop.stop_requested()) return false;
      o.lease_timeout = std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now()),
                                   std::chrono::milliseconds(0), kLeaseTry);
      try {
        opened.emplace(open_persistent_subscription(store, name, o, stop));
        break;
      } catch (const SubscriptionLocked&) {
        if (done()) return true;
        if (Clock::now() >= give_up) return false;
      }
    }
  }
  PersistentSubscription& sub = *opened;
  auto last_event = Clock::now();
  // Short waits, so done() (which may depend on another process's progress) and the deadline are seen.
  constexpr std::chrono::milliseconds kPoll{100};
  while (!stop.stop_requested()) {
    auto now = Clock::now();
    if (now >= deadline) break;
    if (idle && now - last_event >= *idle) break;
    auto wait = std::min<std::chrono::milliseconds>(
        kPoll, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + std::chrono::milliseconds(1));
    auto d = sub.next(wait, stop);
    if (!d) {
      if (done()) {
        sub.close();
        return true;
      }
      continue;
    }
    last_event = Clock::now();
    if (!settle_process_delivery(sub, *d, handle)) continue;
    if (handled) ++*handled;
    if (done()) {
      sub.close();
      return true;
    }
  }
  sub.close();
  return false;
}
}  // namespace detail

namespace {
// How long the runner waits for a delivery in one call; its stop request ends the wait at once.
constexpr std::chrono::milliseconds kRunnerWait(60'000);
}  // namespace

struct ProcessManagerRunner::State {
  std::atomic<bool> running{true};
  mutable std::mutex mu;
  std::exception_ptr error;  // guarded by mu
};

ProcessManagerRunner::ProcessManagerRunner(EventStore& store, std::string name, PersistentConsumerOptions options,
                                           std::function<void(const PersistentDelivery&)> handle)
    : state_(std::make_shared<State>()) {
  if (!persistent_subscription_info(store, name)) throw SubscriptionNotFound(name);
  options = detail::process_consumer_options(options);
  std::optional<PersistentSubscription> opened;
  if (options.wait_for_lease) {
    // A standby: it waits on its thread for as long as the holder (another process) lives, until stop().
    options.lease_timeout = std::chrono::milliseconds::max();
  } else {
    opened.emplace(open_persistent_subscription(store, name, options));  // SubscriptionLocked at once
  }
  thread_ = std::jthread([state = state_, &store, name = std::move(name), options, sub = std::move(opened),
                          handle = std::move(handle)](std::stop_token stop) mutable {
    try {
      if (!sub) {
        try {
          sub.emplace(open_persistent_subscription(store, name, options, stop));
        } catch (const SubscriptionLocked&) {
          if (!stop.stop_requested()) throw;
        }
      }
      while (sub && !stop.stop_requested()) {
        if (auto d = sub->next(kRunnerWait, stop)) detail::settle_process_delivery(*sub, *d, handle);
      }
      if (sub) sub->close();
    } catch (...) {
      std::lock_guard lock(state->mu);
      state->error = std::current_exception();
    }
    state->running = false;
  });
}

ProcessManagerRunner::~ProcessManagerRunner() { stop(); }

void ProcessManagerRunner::stop() {
  thread_.request_stop();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

bool ProcessManagerRunner::running() const { return state_->running; }

std::exception_ptr ProcessManagerRunner::error() const {
  std::lock_guard lock(state_->mu);
  return state_->error;
}

}  // namespace sourced
