#pragma once
// The rules of the subscription registry that every engine shares: what a valid name and configuration
// are, how a consumer's progress changes what is stored, and how a lease holder is described. Engines
// store the facts; these functions decide, so every engine refuses the same input with the same message.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "sourced/subscription_registry.hpp"

namespace sourced::detail {

inline constexpr std::size_t kMaxSubscriptionNameBytes = 200;

// Throws InvalidArgument unless `name` is 1-200 bytes of [A-Za-z0-9_.:@-].
void validate_subscription_name(std::string_view name);
// Throws InvalidArgument for a bad name, stream id, filter (or a filter on a stream subscription), a
// max_in_flight / max_attempts of 0 or above 2^31 - 1, or a start_after beyond 2^63 - 1.
void validate_subscription_config(const PersistentSubscriptionConfig& config);

// Throws InvalidArgument when a key or count in `progress` is beyond 2^63 - 1 (what SQL engines store).
void validate_progress(const SubscriptionProgress& progress);

// The checkpoint to store when a consumer reports `reported` and `stored` is kept: it never moves back.
inline std::uint64_t next_checkpoint(std::uint64_t stored, std::uint64_t reported) {
  return reported > stored ? reported : stored;
}

// A parked event as stored from a consumer's report: parked now unless the consumer said when, and not
// (yet) requested for replay. Progress applies `unparked` first, then `newly_parked` (which replaces a
// parked event with the same key: a replayed event that failed again is parked again, counts and all).
ParkedEvent parked_as_stored(const ParkedEvent& reported, Timestamp now);

// A filter as the SQL engines store it: a JSON object {"category": C, "stream_prefix": P, "event_types": [..]}
// (absent members are unset); nullopt for no filter.
std::optional<std::string> filter_to_json(const std::optional<EventFilter>& filter);
// Throws StorageError when `json` is not what filter_to_json() writes.
EventFilter filter_from_json(std::string_view json);

// How this process describes itself as a lease holder: "pid 4242 on host db1".
std::string this_process_holder();

// Retries `try_take` until it returns true, `stop` is requested or `timeout` passes (then returns false),
// sleeping `pause` between tries. With `wait` false, tries once. The engines' leases are OS or server locks
// that can only be tried, so a waiting acquire polls; `pause` bounds how late a takeover is.
bool poll_until(const std::function<bool()>& try_take, bool wait, std::chrono::milliseconds timeout,
                const std::stop_token& stop, std::chrono::milliseconds pause = std::chrono::milliseconds(20));

}  // namespace sourced::detail
