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
// With a command id (CommandMeta) a command is idempotent: its events get ids derived from the command
// id, so a repeat (a retry after a timeout, a restart) writes nothing and returns the first result.
//
// Thread-safety: const after construction; handle() and load() may be called from many threads at once.
// The store and the registry must outlive the repository.

#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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
};

// A state loaded from a stream.
template <class State>
struct LoadedState {
  State state;
  // The version of the last event folded; 0 when the stream has no visible events.
  StreamVersion version;
  bool exists = false;  // the stream has visible events
  Uuid last_event_id;   // of the event at `version`
  // The version of the snapshot the fold started from; 0 when it started from the first event.
  StreamVersion snapshot;
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
}  // namespace detail

template <Decider D, class Registry>
class Repository {
 public:
  using Event = typename D::Event;
  using State = StateOf<D>;
  using Serializer = typename Registry::Serializer;
  static_assert(std::same_as<Event, typename Registry::Event>,
                "the decider's Event must be the registry's Event (std::variant of the registered types)");
  // Whether states can be snapshotted: the registry's serializer must handle the State.
  static constexpr bool kCanSnapshot = SerializerFor<Serializer, State>;

  // Throws InvalidArgument for options that cannot work (snapshots of a state the serializer cannot
  // write, a negative retry count).
  Repository(EventStore& store, const Registry& registry, D decider = {}, RepositoryOptions options = {})
      : store_(store), registry_(registry), decider_(std::move(decider)), options_(std::move(options)) {
    if (options_.max_conflict_retries < 0) throw InvalidArgument("max_conflict_retries must not be negative");
    if (options_.snapshot_every > 0 && !kCanSnapshot) {
      throw InvalidArgument("snapshot_every is set, but the registry's serializer cannot write the decider's State");
    }
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
    for (int attempt = 1;; ++attempt) {
      result.attempts = attempt;
      detail::CommandTracker tracker(idempotent ? std::optional(result.command_id) : std::nullopt);
      LoadedState<State> loaded = load(stream, tracker);
      if (tracker.found()) return detail::repeated_result(std::move(result), *tracker.found());
      Decision<Event> decision = decider_.decide(command, loaded.state);
      if (decision.rejected() || decision.events().empty()) {
        // A repeat whose events are older than the snapshot: the fold did not see them.
        if (idempotent && loaded.snapshot.value() > 0) {
          if (auto found =
                  detail::find_command_events(store_, stream, StreamVersion(1), loaded.snapshot, result.command_id)) {
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
        e.id = idempotent ? command_event_id(result.command_id, i) : Uuid::v7();
        e.correlation_id = result.correlation_id;
        e.causation_id = result.command_id;
      }
      ExpectedVersion expected = loaded.exists ? ExpectedVersion::exact(loaded.version) : ExpectedVersion::no_stream();
      AppendResult written;
      try {
        written = store_.append(stream, expected, data);
      } catch (const WrongExpectedVersion&) {
        if (attempt > options_.max_conflict_retries) throw;
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
      if (!written.replayed) maybe_snapshot(stream, std::move(loaded), events, written.last_version, *data.back().id);
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
  LoadedState<State> load(std::string_view stream, detail::CommandTracker& tracker) const {
    LoadedState<State> out{decider_.initial_state()};
    std::optional<detail::SnapshotRecord> snap;
    if constexpr (kCanSnapshot) {
      if (options_.snapshot_every > 0) {
        snap = detail::read_snapshot(store_, snapshot_stream(stream));
        if (snap && snap->snapshot_version != snapshot_version_of<D>()) snap.reset();
        if (snap) {
          try {
            out.state = Serializer::template deserialize<State>(snap->data);
          } catch (const SerializationError&) {
            snap.reset();
          }
        }
      }
    }
    if (snap) {
      ReadStreamOptions from_snapshot;
      from_snapshot.from = snap->version;
      EventReader reader = store_.read_stream(stream, from_snapshot);
      if (reader.state() == EventReader::State::ok) {
        const RecordedEvent* first = reader.next();
        // The snapshot describes this stream only if the event it was taken at is still there.
        if (first && first->version == snap->version && first->id == snap->event_id) {
          out.version = first->version;
          out.last_event_id = first->id;
          out.exists = true;
          out.snapshot = snap->version;
          tracker.see(*first);
          fold_rest(reader, out, tracker);
          return out;
        }
      }
      out.state = decider_.initial_state();
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

  void maybe_snapshot(std::string_view stream, LoadedState<State> loaded, const std::vector<Event>& events,
                      StreamVersion version, const Uuid& last_id) const {
    if constexpr (kCanSnapshot) {
      if (options_.snapshot_every == 0 || version.value() - loaded.snapshot.value() < options_.snapshot_every) return;
      write(stream, fold(decider_, std::move(loaded.state), events), version, last_id);
    }
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
};

}  // namespace sourced
