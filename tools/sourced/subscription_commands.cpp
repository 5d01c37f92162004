// `sourced subscription create|delete|info|parked|replay-parked|consume` and `sourced subscriptions`: the
// persistent subscriptions a store keeps (sourced/persistent_subscription.hpp), from a shell.

#include <csignal>
#include <cstring>
#include <ostream>
#include <stop_token>
#include <thread>

#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.hpp"
#include "commands.hpp"
#include "sourced/memory_store.hpp"
#include "sourced/persistent_subscription.hpp"

extern char** environ;

namespace sourced::cli {
namespace {

using json = nlohmann::json;

// Every check of a name or settings is the library's: run against an empty memory store, a bad one is a
// usage error before the real store is opened (and created).
template <class Check>
void checked_by_library(Check check) {
  try {
    auto scratch = open_memory_store();
    check(*scratch);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
}

void check_name(const std::string& name) {
  checked_by_library([&](EventStore& s) { s.subscriptions().get(name); });
}

std::uint32_t parse_limit(const std::optional<std::string>& text, std::string_view what, std::uint32_t fallback) {
  if (!text) return fallback;
  std::uint64_t v = parse_count(*text, what);
  if (v < 1 || v > UINT32_MAX)
    throw UsageError(fmt::format("{} must be from 1 to {}, not '{}'", what, UINT32_MAX, *text));
  return static_cast<std::uint32_t>(v);
}

json source_json(const PersistentSubscriptionConfig& c) {
  json j = {{"stream", c.stream.empty() ? std::string(kAllStream) : c.stream}};
  if (c.filter) {
    if (c.filter->category) j["category"] = *c.filter->category;
    if (c.filter->stream_prefix) j["stream_prefix"] = *c.filter->stream_prefix;
    if (!c.filter->event_types.empty()) j["types"] = c.filter->event_types;
  }
  return j;
}

// One subscription as `info` and `subscriptions` print it. The head is the store's last position (`$all`)
// or the stream's last version; lag is how far the checkpoint is behind it, in those keys (for a filtered
// `$all`, positions not yet looked at, not matching events).
json subscription_json(EventStore& store, const PersistentSubscriptionInfo& i) {
  const auto& c = i.config;
  std::uint64_t head = 0;
  if (c.stream.empty()) {
    head = store.head_position().value();
  } else if (auto s = store.stream_info(c.stream)) {
    head = s->last_version.value();
  }
  auto holder = store.subscriptions().holder(c.name);
  return {{"name", c.name},
          {"source", source_json(c)},
          {"checkpoint", i.checkpoint},
          {"head", head},
          {"lag", head > i.checkpoint ? head - i.checkpoint : 0},
          {"in_flight", i.in_flight},
          {"parked", i.parked},
          {"holder", holder ? json(*holder) : json(nullptr)},
          {"max_in_flight", c.max_in_flight},
          {"max_attempts", c.max_attempts},
          {"last_error", i.last_error.empty() ? json(nullptr) : json(i.last_error)},
          {"created_at", format_timestamp(i.created_at)},
          {"updated_at", format_timestamp(i.updated_at)}};
}

json parked_json(const ParkedEvent& p) {
  return {{"key", p.key},
          {"position", p.position.value()},
          {"stream", p.stream},
          {"version", p.version.value()},
          {"id", p.event_id.to_string()},
          {"type", p.type},
          {"attempts", p.attempts},
          {"error", p.error},
          {"parked_at", format_timestamp(p.parked_at)},
          {"replay_requested", p.replay_requested}};
}

int print_line(Io& io, const json& j) {
  io.out << j.dump() << '\n';
  io.out.flush();
  if (!io.out) throw OutputError();
  return kOk;
}

// SIGINT and SIGTERM, blocked in every thread, are taken by one thread that asks the consumer to stop: it
// then finishes the event in hand, saves what was acknowledged and exits 0. SIGPIPE stays blocked too, so
// a closed stdout (or a command that does not read its stdin) is an error to handle, not a sudden death.
class StopOnSignals {
 public:
  StopOnSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGUSR1);  // wakes the thread when the command ends by itself
    sigaddset(&set_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
    thread_ = std::jthread([this] {
      sigset_t wanted;
      sigemptyset(&wanted);
      sigaddset(&wanted, SIGINT);
      sigaddset(&wanted, SIGTERM);
      sigaddset(&wanted, SIGUSR1);
      int sig = 0;
      sigwait(&wanted, &sig);
      stop_.request_stop();
    });
  }
  ~StopOnSignals() {
    if (!stop_.stop_requested()) pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
    // A SIGPIPE left pending by a closed pipe is dropped rather than delivered when the mask is restored.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    timespec zero{};
    while (sigtimedwait(&pipe, nullptr, &zero) == SIGPIPE) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  std::stop_token token() const { return stop_.get_token(); }
  bool stopped() const { return stop_.stop_requested(); }

 private:
  sigset_t set_{}, old_{};
  std::stop_source stop_;
  std::jthread thread_;
};

// Runs `command` through /bin/sh with `input` on its stdin and the tool's stdout and stderr; returns its
// wait status. The child gets the default signal mask and dispositions back.
int run_handler(const std::string& command, std::string_view input) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("pipe failed: {}", std::strerror(errno)));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[0], 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGUSR1}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
  pid_t pid = 0;
  int rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fds[0]);
  if (rc != 0) {
    ::close(fds[1]);
    throw std::runtime_error(fmt::format("cannot run /bin/sh: {}", std::strerror(rc)));
  }
  // A command that exits without reading its stdin closes the pipe: EPIPE here, its status decides.
  for (std::size_t done = 0; done < input.size();) {
    ssize_t n = ::write(fds[1], input.data() + done, input.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fds[1]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace

int subscription_create_command(const Options& o, Io& io) {
  const std::string& name = o.subscription;
  PersistentSubscriptionSettings settings;
  settings.stream = o.source_stream;
  if (settings.stream == kAllStream) settings.stream.clear();
  if (!o.category.empty() || !o.types.empty()) {
    if (!settings.stream.empty()) throw UsageError("--category and --type filter '$all' only, not a --stream");
    settings.filter = EventFilter{.event_types = o.types};
    if (!o.category.empty()) settings.filter->category = o.category;
  }
  if (o.from) {
    // As `read --from`: the first key to deliver, inclusive.
    if (*o.from == "start") {
      settings.start = SubscriptionStart::origin();
    } else if (*o.from == "end") {
      settings.start = SubscriptionStart::end();
    } else {
      std::uint64_t first = parse_count(*o.from, "--from");
      settings.start = first == 0 ? SubscriptionStart::origin() : SubscriptionStart::after(Position(first - 1));
    }
  }
  settings.max_in_flight = parse_limit(o.max_in_flight, "--max-in-flight", settings.max_in_flight);
  settings.max_attempts = parse_limit(o.max_attempts, "--max-attempts", settings.max_attempts);
  checked_by_library([&](EventStore& s) { create_persistent_subscription(s, name, settings); });

  auto store = open_for_writing(o.store, "subscription create");
  create_persistent_subscription(*store, name, settings);
  auto info = persistent_subscription_info(*store, name);
  if (!info) throw SubscriptionNotFound(name);  // deleted by another process in between
  return print_line(io, subscription_json(*store, *info));
}

int subscription_delete_command(const Options& o, Io& io) {
  check_name(o.subscription);
  auto store = open_for_writing(o.store, "subscription delete");
  if (!delete_persistent_subscription(*store, o.subscription)) throw SubscriptionNotFound(o.subscription);
  return print_line(io, {{"name", o.subscription}, {"deleted", true}});
}

int subscription_info_command(const Options& o, Io& io) {
  check_name(o.subscription);
  auto store = open_for_reading(o.store);
  if (!store) throw SubscriptionNotFound(o.subscription);
  auto info = persistent_subscription_info(*store, o.subscription);
  if (!info) throw SubscriptionNotFound(o.subscription);
  return print_line(io, subscription_json(*store, *info));
}

int subscription_parked_command(const Options& o, Io& io) {
  check_name(o.subscription);
  auto store = open_for_reading(o.store);
  if (!store || !persistent_subscription_info(*store, o.subscription)) throw SubscriptionNotFound(o.subscription);
  Output out(io.out);
  std::uint64_t after = 0;
  for (;;) {
    auto page = store->subscriptions().parked(o.subscription, after, 1000);
    for (const auto& p : page) {
      out.buffer() += parked_json(p).dump();
      out.buffer() += '\n';
      out.line_done();
    }
    if (page.size() < 1000) break;
    after = page.back().key;
  }
  out.flush();
  return kOk;
}

int subscription_replay_command(const Options& o, Io& io) {
  check_name(o.subscription);
  auto store = open_for_writing(o.store, "subscription replay-parked");
  std::uint64_t n = replay_parked_events(*store, o.subscription);
  return print_line(io, {{"name", o.subscription}, {"replay_requested", n}});
}

int subscriptions_command(const Options& o, Io& io) {
  auto store = open_for_reading(o.store);
  if (!store) return kOk;  // no store: no subscriptions
  Output out(io.out);
  for (const auto& i : store->subscriptions().list()) {
    out.buffer() += subscription_json(*store, i).dump();
    out.buffer() += '\n';
    out.line_done();
  }
  out.flush();
  return kOk;
}

int subscription_consume_command(const Options& o, Io& io) {
  check_name(o.subscription);
  std::uint64_t left = o.count ? parse_count(*o.count, "--count") : kUnlimited;
  if (o.exec && o.exec->empty()) throw UsageError("--exec needs a command");
  if (left == 0) return kOk;
  // Before the store starts its threads, so they too leave the signals to the one that waits for them.
  StopOnSignals signals;
  auto store = open_for_writing(o.store, "subscription consume");
  std::optional<PersistentSubscription> opened;
  try {
    opened.emplace(open_persistent_subscription(
        *store, o.subscription, {.wait_for_lease = o.wait, .lease_timeout = std::chrono::hours(24 * 365)},
        signals.token()));
  } catch (const SubscriptionLocked&) {
    if (signals.stopped()) return kOk;  // stopped while waiting for the lease
    throw;
  }
  auto& sub = *opened;
  // A failure on the last allowed attempt parks the event: it is settled, and counts towards --count.
  auto info = persistent_subscription_info(*store, o.subscription);
  std::uint32_t max_attempts = info ? info->config.max_attempts : UINT32_MAX;
  std::string line;
  while (left > 0 && !signals.stopped()) {
    auto d = sub.next(std::chrono::seconds(1), signals.token());
    if (!d) continue;
    line.clear();
    append_event_json(line, *d->event);
    if (!o.exec) {
      // Acknowledged only once the line is out of the process: a failed write acknowledges nothing.
      io.out << line;
      io.out.flush();
      if (!io.out) throw OutputError();
      sub.ack(d->key);
      --left;
      continue;
    }
    int status = run_handler(*o.exec, line);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      sub.ack(d->key);
      --left;
    } else if (WIFSIGNALED(status) && signals.stopped()) {
      break;  // interrupted with us (Ctrl-C reaches the whole group): not handled, not failed
    } else {
      sub.nack(d->key, WIFEXITED(status) ? fmt::format("--exec command exited with status {}", WEXITSTATUS(status))
                                         : fmt::format("--exec command killed by signal {}", WTERMSIG(status)));
      if (d->attempt >= max_attempts) --left;
    }
  }
  sub.close();
  return kOk;
}

}  // namespace sourced::cli
