#pragma once
// A store that crashes on purpose, for the process manager tests: it forwards to a real store and makes
// chosen appends fail, before they write or after (the writer died before it heard back).

#include <functional>
#include <random>
#include <span>
#include <stdexcept>
#include <string_view>

#include "sourced/store.hpp"

namespace sourced::testing {

struct Crash : std::runtime_error {
  Crash() : std::runtime_error("injected crash") {}
};

// Forwards to a store; when armed, an append fails before writing or after writing (the process died
// before it heard back) with the given probability each.
class FaultyStore final : public EventStore {
 public:
  FaultyStore(EventStore& inner, std::mt19937_64& rng) : inner_(inner), rng_(rng) {}
  double fail_before = 0;
  double fail_after = 0;
  int crashes = 0;
  // When set, an append it accepts fails before writing (whatever the probabilities).
  std::function<bool(std::string_view stream, std::span<const EventData> events)> fail_when;

  AppendResult append(std::string_view stream, ExpectedVersion expected, std::span<const EventData> events) override {
    if (chance(fail_before) || (fail_when && fail_when(stream, events))) throw crash();
    AppendResult r = inner_.append(stream, expected, events);
    if (chance(fail_after)) throw crash();
    return r;
  }
  EventReader read_stream(std::string_view stream, ReadStreamOptions options) override {
    return inner_.read_stream(stream, options);
  }
  EventReader read_all(ReadAllOptions options) override { return inner_.read_all(options); }
  std::optional<StreamInfo> stream_info(std::string_view stream) override { return inner_.stream_info(stream); }
  std::vector<StreamInfo> list_streams(std::string_view after, std::size_t limit) override {
    return inner_.list_streams(after, limit);
  }
  void delete_stream(std::string_view stream, ExpectedVersion expected, DeleteMode mode) override {
    inner_.delete_stream(stream, expected, mode);
  }
  Position head_position() override { return inner_.head_position(); }
  Position wait_for_events_after(Position after, std::chrono::milliseconds timeout, std::stop_token stop) override {
    return inner_.wait_for_events_after(after, timeout, stop);
  }
  StoreStats stats() override { return inner_.stats(); }
  SubscriptionRegistry& subscriptions() override { return inner_.subscriptions(); }

 private:
  bool chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  Crash crash() {
    ++crashes;
    return Crash();
  }
  EventStore& inner_;
  std::mt19937_64& rng_;
};

}  // namespace sourced::testing
