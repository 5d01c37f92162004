#pragma once
// sourced::Repository: runs a decider against a stream of the store. handle() loads the state (folding
// the stream, from a snapshot when there is one), decides, and appends the events with the version it
// loaded as the expected version; when another writer got there first (WrongExpectedVersion) it reloads
// and decides again, up to RepositoryOptions::max_conflict_retries times.
//
//   Repository accounts(*store, account_events, Account{}, {.snapshot_every = 100});
//   CommandResult r = accounts.handle("account-42", Withdraw{"42", 70});
//   if (r.rejected()) ...;
//
// Snapshots (snapshot_every > 0, the state serializable with the registry's serializer) are events of
// type "$snapshot" in a stream beside the aggregate's, `snapshot-<stream>` (the prefix is an option),
// read backward for the latest. One records the state, the stream version it describes, the id of the
// event at that version and the decider's kSnapshotVersion. Loading ignores a snapshot that is missing,
// unreadable, of another kSnapshotVersion, or that does not match the stream (the event at its version
// is gone or another: a soft delete since, a snapshot from elsewhere), and folds from the first event.
// See docs/cqrs.md for why a stream and not a table.
//
// States are cached (RepositoryOptions::cached_states): load() asks the store whether the stream moved
// (stream_info) and reads only what is new; handle() first trusts the cached state and lets the append's
// expected version prove it current (as Commanded's in-memory aggregates), deciding again on a checked
// state after a conflict, a rejection or a no-op. One consequence: a stream soft-deleted at exactly the
// cached version (no write since) is continued by handle() from the cached state, because the store
// accepts exact(v) on such a stream; load() sees the delete. Set cached_states = 0 where that matters.
//
// With a command id (CommandMeta) a command is idempotent: its events get ids derived from the command
// id, so a repeat (a retry after a timeout, a restart) writes nothing and returns the first result.
//
// Thread-safety: const after construction; handle() and load() may be called from many threads at once.
// The store and the registry must outlive the repository.

#include <concepts>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sourced/command.hpp"
#include "sourced/decider.hpp"
#include "sourced/store.hpp"
#include "sourced/typed_events.hpp"

namespace sourced {

struct RepositoryOptions {
  // Reloads and decides again this many times after a concurrent write, then lets the
  // WrongExpectedVersion through. The reload is immediate: it is what makes the next attempt differ.
  int max_conflict_retries = 5;
  // Writes a snapshot after a command when at least this many events were appended since the one the
  // state was loaded from. 0: no snapshots (none written, none read).
  std::uint64_t snapshot_every = 0;
  // Snapshots of stream S live in the stream `snapshot_prefix + S`.
  std::string snapshot_prefix = "snapshot-";
  // What loading does with an event whose type is not registered: fail (the default: a state folded
  // without an event may be wrong), or skip.
  UnknownEventTypes unknown_event_types = UnknownEventTypes::fail;
  // States of this many streams are kept in memory after a load or a command. A cached state is used only
  // when the store says the stream has not changed since (stream_info: still active, same last version);
  // when it moved on, only the new events are read and folded. 0: no cache, every load reads the stream.
  // When full, an arbitrary entry makes room.
  std::size_t cached_states = 10000;
};

// A state loaded from a stream.
template <class State>
struct LoadedState {
  State state;
  // The version of the last event folded; 0 when the stream has no visible events.
  StreamVersion version;
  bool exists = false;  // the stream has visible events
  Uuid last_event_id;   // of the event at `version`; nil when a cached state does not know it
  // The version of the latest snapshot known to describe the stream (0: none).
  StreamVersion snapshot;
  // The version of the state the fold started from (a snapshot, or a cached state); 0 when it started
  // from the first event. Events up to it were not read by this load.
  StreamVersion base;
  std::uint64_t events_folded = 0;
};

namespace detail {
struct SnapshotRecord {
  std::string data;
  StreamVersion version;
  Uuid event_id;
  int snapshot_version = 0;
};
// The latest snapshot in `snapshot_stream`; nullopt when there is none or it cannot be read.
std::optional<SnapshotRecord> read_snapshot(EventStore& store, const std::string& snapshot_stream);
// Appends a snapshot; false (and nothing else) when it fails: a snapshot only saves time.
bool write_snapshot(EventStore& store, const std::string& snapshot_stream, const SnapshotRecord& snapshot,
                    ContentType content_type) noexcept;

// Where a command's events are: its first and last version and the position of the last.
struct CommandEvents {
  StreamVersion first;
  StreamVersion last;
  Position last_position;
  std::uint64_t count = 0;
};
// Watches the events a load folds for those of one command (by their derived ids).
class CommandTracker {
 public:
  explicit CommandTracker(std::optional<Uuid> command_id);
  void see(const RecordedEvent& event) {
    if (command_id_ && !done_) see_slow(event);
  }
  const std::optional<CommandEvents>& found() const { return found_; }
  bool done() const { return done_; }

 private:
  void see_slow(const RecordedEvent& event);
  std::optional<Uuid> command_id_;
  Uuid next_;
  bool done_ = false;
  std::optional<CommandEvents> found_;
};
// Reads `stream` from `from` (through `through` when set) for the events of `command_id`.
std::optional<CommandEvents> find_command_events(EventStore& store, std::string_view stream, StreamVersion from,
                                                 std::optional<StreamVersion> through, const Uuid& command_id);
CommandResult repeated_result(CommandResult result, const CommandEvents& events);

// Loaded states by stream, bounded; safe for concurrent use.
template <class T>
class StateCache {
 public:
  explicit StateCache(std::size_t capacity) : capacity_(capacity) {}
  std::shared_ptr<const T> get(std::string_view stream) const {
    std::lock_guard lock(mu_);
    auto it = entries_.find(std::string(stream));
    return it == entries_.end() ? nullptr : it->second;
  }
  void put(std::string_view stream, T value) {
    auto entry = std::make_shared<const T>(std::move(value));
    std::lock_guard lock(mu_);
    auto it = entries_.find(std::string(stream));
    if (it != entries_.end()) {
      it->second = std::move(entry);
      return;
    }
    if (entries_.size() >= capacity_) entries_.erase(entries_.begin());
    entries_.emplace(std::string(stream), std::move(entry));
  }
  void erase(std::string_view stream) {
    std::lock_guard lock(mu_);
    entries_.erase(std::string(stream));
  }

 private:
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const T>> entries_;
};
}  // namespace detail

template <Decider D, class Registry>
class Repository {
 public:
  using Event = typename D::Event;
  using State = StateOf<D>;
  using Serializer = typename Registry::Serializer;
  static_assert(std::same_as<Event, typename Registry::Event>,
                "the decider's Event must be the registry's Event (std::variant of the registered types)");
  // Whether states can be snapshotted: the registry's serializer must handle the State (JsonSerializer
  // accepts any type until it is instantiated, so for it the State's to_json/from_json are checked).
  static constexpr bool kCanSnapshot = [] {
    if constexpr (std::same_as<Serializer, JsonSerializer>) {
      return requires(const nlohmann::json& j, const State& s) {
        j.get<State>();
        nlohmann::json(s);
      };
    } else {
      return SerializerFor<Serializer, State>;
    }
  }();

  // Throws InvalidArgument for options that cannot work (snapshots of a state the serializer cannot
  // write, a negative retry count).
  Repository(EventStore& store, const Registry& registry, D decider = {}, RepositoryOptions options = {})
      : store_(store), registry_(registry), decider_(std::move(decider)), options_(std::move(options)) {
    if (options_.max_conflict_retries < 0) throw InvalidArgument("max_conflict_retries must not be negative");
    if (options_.snapshot_every > 0 && !kCanSnapshot) {
      throw InvalidArgument("snapshot_every is set, but the registry's serializer cannot write the decider's State");
    }
    if (options_.cached_states > 0) cache_ = std::make_unique<detail::StateCache<Loaded>>(options_.cached_states);
  }

  EventStore& store() const { return store_; }
  const Registry& registry() const { return registry_; }
  const D& decider() const { return decider_; }
  const RepositoryOptions& options() const { return options_; }
  std::string snapshot_stream(std::string_view stream) const { return options_.snapshot_prefix + std::string(stream); }

  // The state of `stream` now. Throws StreamDeleted for a tombstoned stream, and the registry's errors
  // for events that cannot be decoded.
  LoadedState<State> load(std::string_view stream) const {
    detail::CommandTracker none(std::nullopt);
    return load(stream, none);
  }

  // Loads, decides `command` and appends its events (see the top of this header). A rejection is a
  // result, not an error. Throws WrongExpectedVersion when the conflicts outlast the retries,
  // DuplicateEventId when the command id was used for another stream, and the store's errors.
  template <class C>
  requires DeciderFor<D, C> CommandResult handle(std::string_view stream, const C& command,
                                                 const CommandMeta& meta = {})
  const { return handle_command(stream, command, meta, meta.command_id.has_value()); }
  // handle(), with the choice spelled out: when `idempotent` is false the command id (used, or generated
  // when empty) is only stamped on the events, not used to find an earlier run. What CommandBus calls
  // when it generated the id itself.
  template <class C>
  requires DeciderFor<D, C> CommandResult handle_command(std::string_view stream, const C& command,
                                                         const CommandMeta& meta, bool idempotent)
  const {
    CommandResult result;
    idempotent = idempotent && meta.command_id.has_value();
    result.command_id = meta.command_id ? *meta.command_id : Uuid::v7();
    result.correlation_id = meta.correlation_id.value_or(result.command_id);
    // A cached state is first trusted without asking the store: the append's expected version proves it
    // was current. What writes nothing (a rejection, no events) has no such proof, and a conflict may
    // only mean the cache was stale: both are decided again on a checked state, without counting as a
    // conflict.
    bool trust_cache = cache_ != nullptr;
    int conflicts = 0;
    for (int attempt = 1;; ++attempt) {
      result.attempts = attempt;
      detail::CommandTracker tracker(idempotent ? std::optional(result.command_id) : std::nullopt);
      bool trusted = false;
      LoadedState<State> loaded = trust_cache ? load_trusting_cache(stream, tracker, trusted) : load(stream, tracker);
      trust_cache = false;
      if (tracker.found()) return detail::repeated_result(std::move(result), *tracker.found());
      Decision<Event> decision = decider_.decide(command, loaded.state);
      if (trusted && (decision.rejected() || decision.events().empty())) {
        auto info = store_.stream_info(stream);
        if (!info || info->status != StreamStatus::active || info->last_version != loaded.version) continue;
      }
      if (decision.rejected() || decision.events().empty()) {
        // A repeat whose events are older than the state the fold started from: the fold did not see them.
        if (idempotent && loaded.base.value() > 0) {
          if (auto found =
                  detail::find_command_events(store_, stream, StreamVersion(1), loaded.base, result.command_id)) {
            return detail::repeated_result(std::move(result), *found);
          }
        }
        if (decision.rejected()) result.rejection = decision.rejection();
        result.stream_version = loaded.version;
        return result;
      }
      const std::vector<Event>& events = decision.events();
      std::vector<EventData> data;
      data.reserve(events.size());
      for (std::size_t i = 0; i < events.size(); ++i) {
        EventData& e = data.emplace_back(registry_.encode(events[i]));
        // Ids only where they are needed (idempotency; a snapshot records its event's id): an append
        // with ids costs the store a lookup of each, one that lets it generate them does not.
        if (idempotent) {
          e.id = command_event_id(result.command_id, i);
        } else if (options_.snapshot_every > 0) {
          e.id = Uuid::v7();
        }
        e.correlation_id = result.correlation_id;
        e.causation_id = result.command_id;
      }
      ExpectedVersion expected = loaded.exists ? ExpectedVersion::exact(loaded.version) : ExpectedVersion::no_stream();
      AppendResult written;
      try {
        written = store_.append(stream, expected, data);
      } catch (const WrongExpectedVersion&) {
        if (!trusted && ++conflicts > options_.max_conflict_retries) throw;
        continue;
      } catch (const DuplicateEventId& e) {
        // The command's ids are stored: it was handled before, and decided differently now.
        if (!idempotent || e.stored_stream() != stream) throw;
        auto found = detail::find_command_events(store_, stream, e.stored_version(), std::nullopt, result.command_id);
        if (!found) throw;
        return detail::repeated_result(std::move(result), *found);
      }
      result.stream_version = written.last_version;
      result.position = written.last_position;
      result.events_written = data.size();
      result.repeated = written.replayed;
      if (!written.replayed) {
        remember(stream, std::move(loaded), events, written.last_version, data.back().id.value_or(Uuid()));
      }
      return result;
    }
  }

  // Loads `stream` and writes a snapshot of it now (when it has events). False when snapshots are off or
  // the write failed.
  bool save_snapshot(std::string_view stream) const {
    if constexpr (kCanSnapshot) {
      if (options_.snapshot_every == 0) return false;
      LoadedState<State> loaded = load(stream);
      if (!loaded.exists) return false;
      return write(stream, loaded.state, loaded.version, loaded.last_event_id);
    } else {
      return false;
    }
  }

 private:
  using Loaded = LoadedState<State>;

  Loaded load(std::string_view stream, detail::CommandTracker& tracker) const {
    std::shared_ptr<const Loaded> cached = cache_ ? cache_->get(stream) : nullptr;
    if (cached) {
      // One cheap look at the stream instead of reading it: unchanged since, the cached state is current
      // (a soft delete or tombstone since changes its status, a write its last version).
      auto info = store_.stream_info(stream);
      bool active = info && info->status == StreamStatus::active;
      if (active && info->last_version == cached->version) {
        Loaded out = *cached;
        out.base = out.version;
        out.events_folded = 0;
        return out;
      }
      if (!active || info->last_version < cached->version) {
        cache_->erase(stream);
        cached.reset();
      }
    }
    Loaded out = load_uncached(stream, tracker, cached.get());
    if (cache_ && out.exists) cache_->put(stream, out);
    return out;
  }

  // The cached state as it is (trusted = true), or a checked load when there is none.
  Loaded load_trusting_cache(std::string_view stream, detail::CommandTracker& tracker, bool& trusted) const {
    if (auto cached = cache_->get(stream)) {
      trusted = true;
      Loaded out = *cached;
      out.base = out.version;
      out.events_folded = 0;
      return out;
    }
    return load(stream, tracker);
  }

  // Folds from `cached` (the stream moved on since), else from the latest snapshot, else from the start.
  Loaded load_uncached(std::string_view stream, detail::CommandTracker& tracker, const Loaded* cached) const {
    Loaded out{decider_.initial_state()};
    std::optional<StreamVersion> base;
    Uuid base_id;
    if (cached) {
      out.state = cached->state;
      out.snapshot = cached->snapshot;
      base = cached->version;
      base_id = cached->last_event_id;
    } else if constexpr (kCanSnapshot) {
      if (options_.snapshot_every > 0) {
        auto snap = detail::read_snapshot(store_, snapshot_stream(stream));
        if (snap && snap->snapshot_version == snapshot_version_of<D>()) {
          try {
            out.state = Serializer::template deserialize<State>(snap->data);
            out.snapshot = snap->version;
            base = snap->version;
            base_id = snap->event_id;
          } catch (const SerializationError&) {
            // Unreadable: fold from the first event.
          }
        }
      }
    }
    if (base) {
      ReadStreamOptions from_base;
      from_base.from = *base;
      EventReader reader = store_.read_stream(stream, from_base);
      if (reader.state() == EventReader::State::ok) {
        const RecordedEvent* first = reader.next();
        // The base describes this stream only if the event it was taken at is still there (a cached
        // state may not know that event's id: the version then decides, which a soft delete since
        // still fails, since the event at it is hidden).
        if (first && first->version == *base && (base_id.is_nil() || first->id == base_id)) {
          out.version = first->version;
          out.last_event_id = first->id;
          out.exists = true;
          out.base = *base;
          tracker.see(*first);
          fold_rest(reader, out, tracker);
          return out;
        }
      }
      out = Loaded{decider_.initial_state()};
    }
    EventReader reader = store_.read_stream(stream);
    if (reader.state() == EventReader::State::stream_not_found) return out;
    fold_rest(reader, out, tracker);
    return out;
  }

  void fold_rest(EventReader& reader, LoadedState<State>& out, detail::CommandTracker& tracker) const {
    while (const RecordedEvent* e = reader.next()) {
      tracker.see(*e);
      if (auto event = registry_.decode(*e, options_.unknown_event_types)) {
        out.state = decider_.evolve(std::move(out.state), *event);
      }
      out.version = e->version;
      out.last_event_id = e->id;
      out.exists = true;
      ++out.events_folded;
    }
  }

  // After a command: caches the new state, and snapshots it when due.
  void remember(std::string_view stream, Loaded loaded, const std::vector<Event>& events, StreamVersion version,
                const Uuid& last_id) const {
    if (!cache_ && options_.snapshot_every == 0) return;
    loaded.state = fold(decider_, std::move(loaded.state), events);
    loaded.version = version;
    loaded.last_event_id = last_id;
    loaded.exists = true;
    loaded.base = StreamVersion(0);
    loaded.events_folded = 0;
    if constexpr (kCanSnapshot) {
      if (options_.snapshot_every > 0 && version.value() - loaded.snapshot.value() >= options_.snapshot_every &&
          write(stream, loaded.state, version, last_id)) {
        loaded.snapshot = version;
      }
    }
    if (cache_) cache_->put(stream, std::move(loaded));
  }

  bool write(std::string_view stream, const State& state, StreamVersion version, const Uuid& event_id) const {
    detail::SnapshotRecord record;
    try {
      record.data = Serializer::serialize(state);
    } catch (const std::exception&) {
      return false;
    }
    record.version = version;
    record.event_id = event_id;
    record.snapshot_version = snapshot_version_of<D>();
    ContentType type = ContentType::unknown;
    if constexpr (requires { Serializer::content_type; }) type = Serializer::content_type;
    return detail::write_snapshot(store_, snapshot_stream(stream), record, type);
  }

  EventStore& store_;
  const Registry& registry_;
  D decider_;
  RepositoryOptions options_;
  std::unique_ptr<detail::StateCache<Loaded>> cache_;
};

}  // namespace sourced
