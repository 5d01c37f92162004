#include "store/subscription_rules.hpp"

#include <cstdint>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "store/append_rules.hpp"
#include "store/commit_signal.hpp"
#include "store/filter.hpp"

namespace sourced {

SubscriptionNotFound::SubscriptionNotFound(std::string name)
    : Error(ErrorCode::subscription_not_found, fmt::format("persistent subscription '{}' not found", name)),
      name_(std::move(name)) {}

SubscriptionExists::SubscriptionExists(std::string name)
    : Error(ErrorCode::subscription_exists, fmt::format("persistent subscription '{}' exists already", name)),
      name_(std::move(name)) {}

SubscriptionLocked::SubscriptionLocked(std::string name, std::string holder)
    : Error(ErrorCode::subscription_locked,
            fmt::format("persistent subscription '{}' is held by another consumer ({})", name, holder),
            /*transient=*/true),
      name_(std::move(name)),
      holder_(std::move(holder)) {}

SubscriptionLeaseLost::SubscriptionLeaseLost(std::string name)
    : Error(ErrorCode::subscription_locked,
            fmt::format("persistent subscription '{}': this consumer's lease was lost (another consumer may hold it "
                        "now); stopped without saving progress",
                        name),
            /*transient=*/true),
      name_(std::move(name)) {}

namespace detail {
namespace {
constexpr std::uint64_t kMaxKey = INT64_MAX;
constexpr std::uint32_t kMaxSetting = INT32_MAX;
}  // namespace

void validate_subscription_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxSubscriptionNameBytes) {
    throw InvalidArgument(
        fmt::format("a subscription name has 1 to {} bytes, not {}", kMaxSubscriptionNameBytes, name.size()));
  }
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == ':' || c == '@' || c == '-';
    if (!ok) {
      throw InvalidArgument(fmt::format("subscription name '{}' may contain only letters, digits and _ . : @ -", name));
    }
  }
}

void validate_subscription_config(const PersistentSubscriptionConfig& config) {
  validate_subscription_name(config.name);
  if (!config.stream.empty()) {
    validate_stream_id(config.stream);
    if (config.filter) {
      throw InvalidArgument(fmt::format("subscription '{}' reads stream '{}': a filter applies only to $all",
                                        config.name, config.stream));
    }
  }
  if (config.filter) plan_filter(*config.filter);
  if (config.max_in_flight == 0) {
    throw InvalidArgument(fmt::format("subscription '{}': max_in_flight must be at least 1", config.name));
  }
  if (config.max_attempts == 0) {
    throw InvalidArgument(fmt::format("subscription '{}': max_attempts must be at least 1", config.name));
  }
  // PostgreSQL stores them as integer and every key as bigint.
  if (config.max_in_flight > kMaxSetting || config.max_attempts > kMaxSetting) {
    throw InvalidArgument(
        fmt::format("subscription '{}': max_in_flight and max_attempts are at most {}", config.name, kMaxSetting));
  }
  if (config.start_after > kMaxKey) {
    throw InvalidArgument(fmt::format("subscription '{}': start_after is at most {}", config.name, kMaxKey));
  }
}

void validate_progress(const SubscriptionProgress& progress) {
  bool ok = progress.checkpoint <= kMaxKey && progress.in_flight <= kMaxKey;
  for (auto k : progress.unparked) ok = ok && k <= kMaxKey;
  for (const auto& p : progress.newly_parked) {
    ok = ok && p.key <= kMaxKey && p.position.value() <= kMaxKey && p.version.value() <= kMaxKey &&
         p.attempts <= kMaxSetting;
  }
  if (!ok) throw InvalidArgument(fmt::format("a subscription's keys and counts are at most {}", kMaxKey));
}

ParkedEvent parked_as_stored(const ParkedEvent& reported, Timestamp now) {
  ParkedEvent p = reported;
  if (p.parked_at == Timestamp{}) p.parked_at = now;
  p.replay_requested = false;
  return p;
}

std::optional<std::string> filter_to_json(const std::optional<EventFilter>& filter) {
  if (!filter) return std::nullopt;
  nlohmann::json j = nlohmann::json::object();
  if (filter->category) j["category"] = *filter->category;
  if (filter->stream_prefix) j["stream_prefix"] = *filter->stream_prefix;
  if (!filter->event_types.empty()) j["event_types"] = filter->event_types;
  return j.dump();
}

EventFilter filter_from_json(std::string_view json) {
  try {
    auto j = nlohmann::json::parse(json);
    EventFilter f;
    if (j.contains("category")) f.category = j.at("category").get<std::string>();
    if (j.contains("stream_prefix")) f.stream_prefix = j.at("stream_prefix").get<std::string>();
    if (j.contains("event_types")) f.event_types = j.at("event_types").get<std::vector<std::string>>();
    return f;
  } catch (const nlohmann::json::exception& e) {
    throw StorageError(fmt::format("a stored subscription filter is not valid: {} ({})", e.what(), json));
  }
}

std::string this_process_holder() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return fmt::format("pid {} on host {}", ::getpid(), host[0] ? host : "?");
}

bool poll_until(const std::function<bool()>& try_take, bool wait, std::chrono::milliseconds timeout,
                const std::stop_token& stop, std::chrono::milliseconds pause) {
  auto deadline = std::chrono::steady_clock::now() + std::min(timeout, std::chrono::milliseconds(kMaxWaitMs));
  for (;;) {
    if (try_take()) return true;
    if (!wait || stop.stop_requested()) return false;
    auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return false;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(pause, left));
  }
}

}  // namespace detail
}  // namespace sourced
