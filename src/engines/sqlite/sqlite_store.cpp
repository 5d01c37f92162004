#include "sourced/sqlite_store.hpp"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <system_error>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/inotify.h>
#include <unistd.h>

#include "engines/sqlite/sqlite_db.hpp"
#include "engines/sqlite/sqlite_registry.hpp"
#include "store/append_rules.hpp"
#include "store/commit_signal.hpp"
#include "store/commit_watcher.hpp"
#include "store/filter.hpp"
#include "store/group_commit.hpp"

namespace sourced {
namespace {

using detail::GroupCommit;
using detail::sqlite::Connection;
using detail::sqlite::ConnectionPool;
using detail::sqlite::ScopedStatement;
using detail::sqlite::Statement;

constexpr int kSchemaVersion = 3;
// PRAGMA application_id of a sourced store ("SRCD"): tells our files from other programs' databases.
constexpr std::int64_t kApplicationId = 0x53524344;
constexpr std::size_t kPageSize = 1024;
// Events a filtered page examines at least: more than a plain page, as most may not pass.
constexpr std::size_t kFilteredScan = 4096;

// Migration 1. Positions are the rowid of `events`: a B-tree keyed by position, so `$all` reads are a
// range scan and appends land at the right edge.
constexpr const char* kSchemaV1 = R"sql(
-- A stream's last version is max(events.version) for it: appends write only to `events`, so a commit
-- dirties as few pages as possible. `streams` changes when a stream is created or deleted.
CREATE TABLE IF NOT EXISTS streams (
  id             INTEGER PRIMARY KEY,
  name           TEXT    NOT NULL UNIQUE,
  hidden_through INTEGER NOT NULL DEFAULT 0,
  tombstoned     INTEGER NOT NULL DEFAULT 0,
  created_at     INTEGER NOT NULL,
  updated_at     INTEGER NOT NULL  -- creation or deletion time; later appends are dated by their events
);
CREATE TABLE IF NOT EXISTS events (
  position       INTEGER PRIMARY KEY,
  stream_id      INTEGER NOT NULL REFERENCES streams(id),
  version        INTEGER NOT NULL,
  id             BLOB    NOT NULL,
  type           TEXT    NOT NULL,
  data           BLOB    NOT NULL,
  metadata       BLOB    NOT NULL,
  correlation_id BLOB,
  causation_id   BLOB,
  created_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_stream ON events(stream_id, version);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events(id);
)sql";

// Migration 2: each event's ContentType (0 unknown, 1 json, 2 binary). Events stored before it read as
// unknown. Adding a column with a constant default rewrites no row: the migration is instant.
constexpr const char* kSchemaV2 = "ALTER TABLE events ADD COLUMN content_type INTEGER NOT NULL DEFAULT 0;";

// Migration 3: the subscription registry's tables (engines/sqlite/sqlite_registry.cpp). New tables only.
static_assert(detail::sqlite::kRegistrySchemaVersion == 3);

// The event columns that read_event() decodes, for a store at schema `version`: a version-1 file
// (readable read-only, see SqliteStore's constructor) has no content type, so it reads as unknown.
std::string sql_for(std::string_view text, int version) {
  std::string out(text);
  static constexpr std::string_view kToken = "{content_type}";
  out.replace(out.find(kToken), kToken.size(), version >= 2 ? "e.content_type" : "0");
  return out;
}

ContentType content_type_of(std::int64_t v) {
  return v == 1 ? ContentType::json : v == 2 ? ContentType::binary : ContentType::unknown;
}

std::int64_t to_micros(Timestamp t) { return t.time_since_epoch().count(); }
Timestamp from_micros(std::int64_t v) { return Timestamp(std::chrono::microseconds(v)); }

std::optional<Uuid> uuid_column(const Statement& st, int col) {
  if (st.is_null(col)) return std::nullopt;
  auto b = st.blob(col);
  if (b.size() != 16) return std::nullopt;
  Uuid::Bytes bytes;
  std::memcpy(bytes.data(), b.data(), 16);
  return Uuid(bytes);
}

void bind_uuid(Statement& st, int i, const std::optional<Uuid>& id) {
  if (id) {
    st.bind_blob(i, id->bytes().data(), 16);
  } else {
    st.bind_null(i);
  }
}

struct StreamRow {
  std::int64_t id = 0;
  detail::StreamState state;
  Timestamp created_at;
  Timestamp updated_at;
};

// The stream row and its last version, for the write path: the last version comes from the index, not
// from the last event's row (kSelectStreamInfo's join), which is cheaper.
constexpr const char* kSelectStreamState =
    "SELECT id, hidden_through, tombstoned, created_at, updated_at, "
    "coalesce((SELECT max(version) FROM events WHERE stream_id = streams.id), 0) FROM streams WHERE name = ?1";
// Everything StreamInfo shows: updated_at is the later of the row's time and the last event's.
constexpr const char* kSelectStreamInfo =
    "SELECT s.id, s.hidden_through, s.tombstoned, s.created_at, max(s.updated_at, coalesce(e.created_at, 0)), "
    "coalesce(e.version, 0) FROM streams s LEFT JOIN events e ON e.position = "
    "(SELECT position FROM events WHERE stream_id = s.id ORDER BY version DESC LIMIT 1) WHERE s.name = ?1";

std::optional<StreamRow> load_stream(Connection& c, std::string_view name, bool with_times = false) {
  ScopedStatement st = c.prepare(with_times ? kSelectStreamInfo : kSelectStreamState);
  st->bind_text(1, name);
  if (!st->step()) return std::nullopt;
  StreamRow row;
  row.id = st->int64(0);
  row.state.exists = true;
  row.state.hidden_through = StreamVersion(st->int64(1));
  row.state.tombstoned = st->int64(2) != 0;
  row.created_at = from_micros(st->int64(3));
  row.updated_at = from_micros(st->int64(4));
  row.state.last = StreamVersion(st->int64(5));
  return row;
}

// Columns 0..9 of an event row after the stream name: position, version, id, type, data, metadata,
// correlation_id, causation_id, created_at, content_type.
void read_event(const Statement& st, int first, RecordedEvent& e) {
  e.position = Position(st.int64(first));
  e.version = StreamVersion(st.int64(first + 1));
  e.id = uuid_column(st, first + 2).value_or(Uuid());
  e.type.assign(st.text(first + 3));
  e.data.assign(st.blob(first + 4));
  e.metadata.assign(st.blob(first + 5));
  e.correlation_id = uuid_column(st, first + 6);
  e.causation_id = uuid_column(st, first + 7);
  e.created_at = from_micros(st.int64(first + 8));
  e.content_type = content_type_of(st.int64(first + 9));
}

// The page queries, for the store's schema version.
struct Queries {
  explicit Queries(int version) {
    static constexpr std::string_view kAll =
        "SELECT s.name, e.position, e.version, e.id, e.type, e.data, e.metadata, e.correlation_id, e.causation_id, "
        "e.created_at, {content_type} FROM events e JOIN streams s ON s.id = e.stream_id ";
    all_forward = sql_for(kAll, version) + "WHERE e.position >= ?1 ORDER BY e.position LIMIT ?2";
    all_backward = sql_for(kAll, version) + "WHERE e.position <= ?1 ORDER BY e.position DESC LIMIT ?2";
    static constexpr std::string_view kFiltered =
        "WHERE e.position >= ?1 AND e.position <= ?2 "
        "AND (?3 IS NULL OR e.type IN (SELECT value FROM json_each(?3))) "
        "AND (?4 IS NULL OR s.name = ?6 OR (s.name >= ?4 AND (?5 IS NULL OR s.name < ?5))) ";
    filtered_forward = sql_for(kAll, version) + std::string(kFiltered) + "ORDER BY e.position";
    filtered_backward = sql_for(kAll, version) + std::string(kFiltered) + "ORDER BY e.position DESC";
    static constexpr std::string_view kStream =
        "SELECT e.position, e.version, e.id, e.type, e.data, e.metadata, e.correlation_id, e.causation_id, "
        "e.created_at, {content_type} FROM events e ";
    stream_forward = sql_for(kStream, version) + "WHERE stream_id = ?1 AND version >= ?2 ORDER BY version LIMIT ?3";
    stream_backward = sql_for(kStream, version) +
                      "WHERE stream_id = ?1 AND version <= ?2 AND version > ?4 ORDER BY version DESC LIMIT ?3";
  }
  std::string all_forward, all_backward, filtered_forward, filtered_backward, stream_forward, stream_backward;
};

struct Shared {
  Shared(std::string p, const SqliteOptions& o, int version)
      : path(std::move(p)), readers(path, o.read_connections, o.busy_timeout_ms, o.read_cache_kib), queries(version) {}
  std::string path;
  ConnectionPool readers;
  Queries queries;
};

class AllPages final : public detail::PageSource {
 public:
  explicit AllPages(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    out.resize(limit);
    std::size_t n = 0;
    auto conn = shared_->readers.acquire();
    const Queries& q = shared_->queries;
    ScopedStatement st = conn->prepare(direction == Direction::forward ? q.all_forward : q.all_backward);
    st->bind(1, static_cast<std::int64_t>(std::min<std::uint64_t>(from, INT64_MAX)));
    st->bind(2, static_cast<std::int64_t>(limit));
    while (n < limit && st->step()) {
      RecordedEvent& e = out[n++];
      e.stream.assign(st->text(0));
      read_event(*st, 1, e);
    }
    out.resize(n);
  }

 private:
  std::shared_ptr<Shared> shared_;
};

// A filtered page of `$all`: examines the positions [from, from + limit) (or down from `from`), returns
// the events that pass in SQL, and says how far it looked. The head is read in the same read
// transaction as the page, so "looked through position p" never claims a position the page's snapshot
// did not hold (positions are handed out in commit order, so no later commit lands at or below it).
class FilteredAllPages final : public detail::PageSource {
 public:
  FilteredAllPages(std::shared_ptr<Shared> shared, const EventFilter& filter)
      : shared_(std::move(shared)), plan_(detail::plan_filter(filter)) {
    if (!plan_.types.empty()) types_json_ = nlohmann::json(plan_.types).dump();
  }

  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    out.clear();
    auto conn = shared_->readers.acquire();
    conn->exec("BEGIN");
    struct EndRead {
      Connection& c;
      ~EndRead() { sqlite3_exec(c.handle(), "COMMIT", nullptr, nullptr, nullptr); }
    } end_read{*conn};
    limit = std::max(limit, kFilteredScan);
    std::uint64_t head = 0;
    {
      ScopedStatement h = conn->prepare("SELECT coalesce(max(position), 0) FROM events");
      h->step();
      head = static_cast<std::uint64_t>(h->int64(0));
    }
    std::uint64_t lo, hi;
    bool forward = direction == Direction::forward;
    if (forward) {
      from = std::max<std::uint64_t>(from, 1);
      std::uint64_t want = from + limit - 1 < from ? kUnlimited : from + limit - 1;
      lo = from;
      hi = std::min(want, head);
      scan_.reached_end = want >= head;
      scan_.last_key = hi < lo ? lo - 1 : hi;
    } else {
      hi = std::min(from, head);
      lo = hi >= limit ? hi - limit + 1 : 1;
      scan_.reached_end = lo <= 1;
      scan_.last_key = hi == 0 ? 1 : lo;
    }
    if (hi < lo || hi == 0) return;
    const Queries& q = shared_->queries;
    ScopedStatement st = conn->prepare(forward ? q.filtered_forward : q.filtered_backward);
    st->bind(1, static_cast<std::int64_t>(lo)).bind(2, static_cast<std::int64_t>(hi));
    if (!types_json_.empty()) st->bind_text(3, types_json_);
    if (plan_.by_stream) {
      st->bind_text(4, plan_.lo);
      if (plan_.hi) st->bind_text(5, *plan_.hi);
      if (plan_.exact) st->bind_text(6, *plan_.exact);
    }
    while (st->step()) {
      RecordedEvent& e = out.emplace_back();
      e.stream.assign(st->text(0));
      read_event(*st, 1, e);
    }
  }
  std::optional<Scan> last_scan() const override { return scan_; }

 private:
  std::shared_ptr<Shared> shared_;
  detail::FilterPlan plan_;
  std::string types_json_;
  Scan scan_;
};

class StreamPages final : public detail::PageSource {
 public:
  StreamPages(std::shared_ptr<Shared> shared, std::string stream, std::int64_t stream_id, std::uint64_t hidden)
      : shared_(std::move(shared)), stream_(std::move(stream)), stream_id_(stream_id), hidden_(hidden) {}

  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    out.resize(limit);
    std::size_t n = 0;
    auto conn = shared_->readers.acquire();
    bool forward = direction == Direction::forward;
    const Queries& q = shared_->queries;
    ScopedStatement st = conn->prepare(forward ? q.stream_forward : q.stream_backward);
    st->bind(1, stream_id_);
    st->bind(
        2, static_cast<std::int64_t>(std::min<std::uint64_t>(forward ? std::max(from, hidden_ + 1) : from, INT64_MAX)));
    st->bind(3, static_cast<std::int64_t>(limit));
    if (!forward) st->bind(4, static_cast<std::int64_t>(hidden_));
    while (n < limit && st->step()) {
      RecordedEvent& e = out[n++];
      e.stream = stream_;
      read_event(*st, 0, e);
    }
    out.resize(n);
  }

 private:
  std::shared_ptr<Shared> shared_;
  std::string stream_;
  std::int64_t stream_id_;
  std::uint64_t hidden_;
};

// Refuses what must not be opened, before anything touches the file: a missing file that may not be
// created, and something that is not a regular file (a device such as /dev/null, a directory).
bool check_location(const std::string& path, const SqliteOptions& options) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    if (!options.create_if_missing || options.read_only) throw StoreNotFound(path);
    return false;
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw StorageError(fmt::format("cannot open SQLite store '{}': it is not a regular file", path));
  }
  return true;
}

// The schema version of the store in `c`'s file: 0 for an empty database that may become a store. Throws
// StorageError for a file that is not a SQLite database or holds another program's database.
int store_schema_version(Connection& c, bool read_only) {
  std::int64_t app = 0, version = 0, objects = 0, ours = 0;
  auto header_value = [&](const char* pragma) {
    ScopedStatement st = c.prepare(pragma);
    st->step();
    return st->int64(0);
  };
  // The header's numbers come from plain PRAGMAs, which do not parse the schema: parsing it costs a new
  // connection ~0.5 ms, and a short command (the CLI's) would pay it here and again on its first query.
  // The schema is looked at only for a file that does not carry our application id.
  auto read = [&] {
    app = header_value("PRAGMA application_id");
    version = header_value("PRAGMA user_version");
    if (app != kApplicationId) {
      ScopedStatement st = c.prepare(
          "SELECT (SELECT count(*) FROM sqlite_master), "
          "(SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('events', 'streams'))");
      st->step();
      objects = st->int64(0);
      ours = st->int64(1);
    }
  };
  try {
    read();
    if (app == 0 && version == 0 && objects > 0) {
      // Read one by one, a store that another process created in between looks like "tables but no
      // version". Read again in one snapshot before calling it another program's database. (Only here:
      // holding a read lock on every open delays a new file's switch to WAL in other processes.)
      c.exec("BEGIN");
      struct EndRead {
        Connection& c;
        ~EndRead() { sqlite3_exec(c.handle(), "COMMIT", nullptr, nullptr, nullptr); }
      } end_read{c};
      read();
    }
  } catch (const StorageError& e) {
    // Busy or locked past the timeout says nothing about what the file holds: a retry may open it.
    if (e.transient()) throw;
    throw StorageError(fmt::format("'{}' is not a sourced event store: {}", c.path(), e.what()));
  }
  // Stores made before application_id was set are recognised by their version and tables.
  if (app == kApplicationId || (app == 0 && version >= 1 && ours == 2)) return static_cast<int>(version);
  if (app == 0 && version == 0 && objects == 0) {
    if (read_only) throw StorageError(fmt::format("'{}' is not a sourced event store: it is empty", c.path()));
    return 0;
  }
  throw StorageError(fmt::format(
      "'{}' is not a sourced event store: it holds another database (application_id {}, user_version {}, {} "
      "schema objects); it was left unchanged",
      c.path(), app, version, objects));
}

// A write (append or delete) waiting for its group. `work` first checks (reads only) and then writes;
// it sets the store's writing_ flag in between (see SqliteStore::run).
class WriteRequest final : public GroupCommit::Request {
 public:
  template <class Work>
  WriteRequest(std::size_t events, Work& work)
      : Request(events, 0), work_(&work), call_([](void* w) { (*static_cast<Work*>(w))(); }) {}
  void run() { call_(work_); }

 private:
  void* work_;
  void (*call_)(void*);
};

class SqliteStore final : public EventStore, private GroupCommit::Engine {
 public:
  SqliteStore(const std::string& path, SqliteOptions options)
      : options_(options),
        existed_(check_location(path, options)),
        writer_(path, options.read_only, options.busy_timeout_ms) {
    int version = store_schema_version(writer_, options.read_only);
    if (options.read_only) {
      // Older versions are read as they are (a read-only open must not write): their events read with
      // what their schema holds (version 1: no content type, so unknown).
      if (version > kSchemaVersion) {
        throw StorageError(fmt::format("SQLite store '{}' has schema version {}, newer than this library's {}", path,
                                       version, kSchemaVersion));
      }
      shared_ = std::make_shared<Shared>(path, options, version);
      registry_ = make_registry(version);
      return;
    }
    enter_wal_mode(options.busy_timeout_ms);
    writer_.exec(options.durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    writer_.exec("PRAGMA foreign_keys=OFF");
    writer_.exec("PRAGMA cache_size=-65536");
    if (options.max_size_bytes > 0) {
      std::uint64_t page_size = 0;
      {
        ScopedStatement page = writer_.prepare("PRAGMA page_size");
        page->step();
        page_size = static_cast<std::uint64_t>(page->int64(0));
      }
      writer_.exec(
          fmt::format("PRAGMA max_page_count={}", std::max<std::uint64_t>(1, options.max_size_bytes / page_size))
              .c_str());
    }
    migrate();
    shared_ = std::make_shared<Shared>(path, options, kSchemaVersion);
    registry_ = make_registry(kSchemaVersion);
    // Checkpoints copy the WAL into the database file and sync it: done by the committing thread (SQLite's
    // default) they stall every group commit behind them, so a background thread (started by the first
    // commit that needs it) runs them instead.
    sqlite3_wal_autocheckpoint(writer_.handle(), 0);
    sqlite3_wal_hook(writer_.handle(), &SqliteStore::on_commit, this);
    keep_wal_on_close();
    detail::GroupLimits limits;
    limits.max_events = options.max_group_events;
    group_commit_.emplace(static_cast<GroupCommit::Engine&>(*this), limits);
  }

  ~SqliteStore() override {
    commit_signal_.close();
    {
      std::lock_guard lock(watcher_mu_);
      watcher_.reset();
    }
    group_commit_.reset();  // runs what is queued; its hooks use everything below
    if (options_.read_only) return;
    {
      std::lock_guard lock(checkpoint_mu_);
      stopping_ = true;
    }
    checkpoint_cv_.notify_one();
    if (checkpointer_.joinable()) checkpointer_.join();
    checkpoint_before_close();
  }

  AppendResult append(std::string_view stream, ExpectedVersion expected, std::span<const EventData> events) override {
    auto prepared = detail::prepare_append(stream, events);
    refuse_if_read_only(stream);
    AppendResult result;
    auto work = [&] { result = append_locked(stream, expected, prepared); };
    WriteRequest request(prepared.size(), work);
    group_commit_->submit(request);
    return result;
  }

  EventReader read_stream(std::string_view stream, ReadStreamOptions options) override {
    detail::validate_stream_id(stream);
    std::optional<StreamRow> row;
    {
      auto conn = shared_->readers.acquire();
      row = load_stream(*conn, stream);
    }
    detail::StreamState state = row ? row->state : detail::StreamState{};
    auto pages =
        std::make_shared<StreamPages>(shared_, std::string(stream), row ? row->id : 0, state.hidden_through.value());
    return detail::make_stream_reader(stream, state, options, std::move(pages), kPageSize);
  }

  EventReader read_all(ReadAllOptions options) override {
    if (options.filter) {
      return detail::make_all_reader(options, std::make_shared<FilteredAllPages>(shared_, *options.filter), kPageSize);
    }
    return detail::make_all_reader(options, std::make_shared<AllPages>(shared_), kPageSize);
  }

  std::optional<StreamInfo> stream_info(std::string_view stream) override {
    detail::validate_stream_id(stream);
    auto conn = shared_->readers.acquire();
    auto row = load_stream(*conn, stream, true);
    if (!row) return std::nullopt;
    return detail::make_info(std::string(stream), row->state, row->created_at, row->updated_at);
  }

  std::vector<StreamInfo> list_streams(std::string_view after, std::size_t limit) override {
    static constexpr const char* kList =
        "SELECT s.name, coalesce(e.version, 0), s.hidden_through, s.tombstoned, s.created_at, "
        "max(s.updated_at, coalesce(e.created_at, 0)) FROM streams s LEFT JOIN events e ON e.position = "
        "(SELECT position FROM events WHERE stream_id = s.id ORDER BY version DESC LIMIT 1) "
        "WHERE s.name > ?1 ORDER BY s.name LIMIT ?2";
    auto conn = shared_->readers.acquire();
    ScopedStatement st = conn->prepare(kList);
    st->bind_text(1, after).bind(2, static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
    std::vector<StreamInfo> out;
    while (st->step()) {
      detail::StreamState s;
      s.exists = true;
      s.last = StreamVersion(st->int64(1));
      s.hidden_through = StreamVersion(st->int64(2));
      s.tombstoned = st->int64(3) != 0;
      out.push_back(
          detail::make_info(std::string(st->text(0)), s, from_micros(st->int64(4)), from_micros(st->int64(5))));
    }
    return out;
  }

  void delete_stream(std::string_view stream, ExpectedVersion expected, DeleteMode mode) override {
    detail::validate_delete(stream);
    refuse_if_read_only(stream);
    auto work = [&] { delete_locked(stream, expected, mode); };
    WriteRequest request(0, work);
    group_commit_->submit(request);
  }

  Position head_position() override {
    auto conn = shared_->readers.acquire();
    ScopedStatement st = conn->prepare("SELECT coalesce(max(position), 0) FROM events");
    st->step();
    return Position(st->int64(0));
  }

  Position wait_for_events_after(Position after, std::chrono::milliseconds timeout, std::stop_token stop) override {
    // Our own commits wake us at once; other processes' commits through the WAL watcher (and polling
    // every 50 ms, should a notice be missed).
    start_watcher();
    return commit_signal_.wait(after, timeout, std::move(stop), [this] { return head_position(); });
  }

  SubscriptionRegistry& subscriptions() override { return *registry_; }

  StoreStats stats() override {
    auto conn = shared_->readers.acquire();
    StoreStats s;
    s.engine = "sqlite";
    ScopedStatement st =
        conn->prepare("SELECT (SELECT count(*) FROM streams), (SELECT coalesce(max(position), 0) FROM events)");
    st->step();
    s.streams = st->int64(0);
    s.head = Position(st->int64(1));
    return s;
  }

 private:
  void refuse_if_read_only(std::string_view stream) const {
    if (options_.read_only) {
      throw InvalidArgument(
          fmt::format("SQLite store '{}' was opened read-only: stream '{}' cannot be written", writer_.path(), stream));
    }
  }

  // The registry writes through the group commit like appends do: its changes share the groups'
  // transactions and syncs, and a failing one rolls back and reruns its group like a failing append.
  std::unique_ptr<SubscriptionRegistry> make_registry(int version) {
    detail::sqlite::RegistryHost host;
    host.write = [this](const std::function<void(Connection&, bool&)>& work) {
      auto run = [&] { work(writer_, writing_); };
      WriteRequest request(0, run);
      group_commit_->submit(request);
    };
    host.readers = &shared_->readers;
    host.path = writer_.path();
    host.read_only = options_.read_only;
    host.schema_version = version;
    return detail::sqlite::make_registry(std::move(host));
  }

  // Switching a new file to WAL needs it to itself: SQLite reports busy at once, without the busy handler,
  // while another process opening the same new file holds a read lock for a moment. Wait as a busy
  // handler would.
  void enter_wal_mode(int busy_timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
    for (;;) {
      try {
        writer_.exec("PRAGMA journal_mode=WAL");
        return;
      } catch (const StorageError& e) {
        if (!e.transient() || std::chrono::steady_clock::now() >= deadline) throw;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void migrate() {
    int version = 0;
    {
      ScopedStatement st = writer_.prepare("PRAGMA user_version");
      st->step();
      version = static_cast<int>(st->int64(0));
    }
    if (version > kSchemaVersion) {
      throw StorageError(fmt::format("SQLite store '{}' has schema version {}, newer than this library's {}",
                                     writer_.path(), version, kSchemaVersion));
    }
    if (version == kSchemaVersion) {
      if (app_id() != kApplicationId) writer_.exec("PRAGMA application_id = 1397900100");  // kApplicationId
      return;
    }
    writer_.exec("BEGIN IMMEDIATE");
    try {
      // Read again inside the write lock: another process may have migrated meanwhile.
      {
        ScopedStatement st = writer_.prepare("PRAGMA user_version");
        st->step();
        version = static_cast<int>(st->int64(0));
      }
      if (version < 1) writer_.exec(kSchemaV1);
      if (version < 2) writer_.exec(kSchemaV2);
      if (version < 3) writer_.exec(detail::sqlite::kRegistrySchema);
      writer_.exec(fmt::format("PRAGMA user_version = {}", kSchemaVersion).c_str());
      writer_.exec("PRAGMA application_id = 1397900100");
      writer_.exec("COMMIT");
    } catch (...) {
      sqlite3_exec(writer_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  }

  // Group commit (detail::GroupCommit): its writer thread owns the write connection and calls run() with
  // each group; one transaction, one commit, one sync per group.
  GroupCommit::Request* run(std::span<GroupCommit::Request* const> group) override {
    writer_.prepare("BEGIN IMMEDIATE")->run();  // failing here, nothing started: the group fails
    try {
      next_position_ = 0;
      revalidate_stream_cache();
      std::size_t ok = 0;
      for (GroupCommit::Request* r : group) {
        writing_ = false;
        try {
          static_cast<WriteRequest*>(r)->run();
          ++ok;
        } catch (...) {
          r->error = std::current_exception();
          // Partial writes to undo, or an error (I/O, full disk, out of memory) after which SQLite rolled
          // the whole transaction back itself: later requests would run in autocommit, one statement at
          // a time. Either way the group starts over without this request (GroupCommit reruns the rest).
          if (writing_ || sqlite3_get_autocommit(writer_.handle())) {
            roll_back();
            return r;
          }
        }
      }
      writer_.prepare(ok ? "COMMIT" : "ROLLBACK")->run();
    } catch (...) {
      // Commit failed (or bookkeeping before any request ran): nothing of the group is stored.
      roll_back();
      throw;
    }
    return nullptr;
  }

  void committed(std::span<GroupCommit::Request* const>) noexcept override { commit_signal_.committed(); }

  // Drops the group's transaction (a no-op if SQLite already rolled back) and what the cache learnt in it.
  void roll_back() noexcept {
    sqlite3_exec(writer_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
    stream_cache_.clear();
  }

  std::uint64_t next_position() {
    if (next_position_ == 0) {
      ScopedStatement st = writer_.prepare("SELECT coalesce(max(position), 0) FROM events");
      st->step();
      next_position_ = static_cast<std::uint64_t>(st->int64(0)) + 1;
    }
    return next_position_;
  }

  std::optional<detail::StoredLocation> lookup_id(const Uuid& id) {
    ScopedStatement st = writer_.prepare(
        "SELECT s.name, e.version, e.position FROM events e JOIN streams s ON s.id = e.stream_id WHERE e.id = ?1");
    st->bind_blob(1, id.bytes().data(), 16);
    if (!st->step()) return std::nullopt;
    return detail::StoredLocation{std::string(st->text(0)), StreamVersion(st->int64(1)), Position(st->int64(2))};
  }

  std::int64_t create_stream(std::string_view stream, Timestamp ts) {
    ScopedStatement st = writer_.prepare("INSERT INTO streams (name, created_at, updated_at) VALUES (?1, ?2, ?2)");
    st->bind_text(1, stream).bind(2, to_micros(ts));
    st->run();
    return sqlite3_last_insert_rowid(writer_.handle());
  }

  AppendResult append_locked(std::string_view stream, ExpectedVersion expected,
                             const std::vector<detail::PreparedEvent>& events) {
    auto row = cached_stream(stream);
    detail::StreamState state = row ? row->state : detail::StreamState{};
    if (auto replay =
            detail::check_replay(stream, state, expected, events, [&](const Uuid& id) { return lookup_id(id); })) {
      return *replay;
    }
    detail::check_expected(stream, state, expected);
    AppendResult result;
    result.first_version = state.last.next();
    result.last_version = state.last;
    if (events.empty()) return result;
    writing_ = true;
    Timestamp ts = now();
    std::int64_t stream_id = row ? row->id : create_stream(stream, ts);
    ScopedStatement ins = writer_.prepare(
        "INSERT INTO events (position, stream_id, version, id, type, data, metadata, correlation_id, causation_id, "
        "created_at, content_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
    std::uint64_t position = next_position();
    result.first_position = Position(position);
    std::uint64_t version = state.last.value();
    for (const auto& p : events) {
      ++version;
      ins->reset();  // ready for this row (the guard resets it once more when the scope ends)
      ins->bind(1, static_cast<std::int64_t>(position))
          .bind(2, stream_id)
          .bind(3, static_cast<std::int64_t>(version))
          .bind_blob(4, p.id.bytes().data(), 16)
          .bind_text(5, p.data->type)
          .bind_blob(6, p.data->data.data(), p.data->data.size())
          .bind_blob(7, p.data->metadata.data(), p.data->metadata.size());
      bind_uuid(*ins, 8, p.data->correlation_id);
      bind_uuid(*ins, 9, p.data->causation_id);
      ins->bind(10, to_micros(ts)).bind(11, static_cast<std::int64_t>(p.data->content_type));
      try {
        ins->run();
      } catch (const StorageError&) {
        if (sqlite3_extended_errcode(writer_.handle()) == SQLITE_CONSTRAINT_UNIQUE) {
          if (!p.id_given && lookup_id(p.id)) throw detail::generated_id_collision(stream);
          if (auto loc = lookup_id(p.id)) throw DuplicateEventId(p.id, std::string(stream), loc->stream, loc->version);
        }
        throw;
      }
      ++position;
    }
    next_position_ = position;
    StreamRow& cached = remember_stream(stream, row);
    cached.id = stream_id;
    cached.state.exists = true;
    cached.state.last = StreamVersion(version);
    result.last_version = StreamVersion(version);
    result.last_position = Position(position - 1);
    return result;
  }

  void delete_locked(std::string_view stream, ExpectedVersion expected, DeleteMode mode) {
    auto row = cached_stream(stream);
    detail::StreamState state = row ? row->state : detail::StreamState{};
    detail::StreamState after = detail::decide_delete(stream, state, expected, mode);
    writing_ = true;
    Timestamp ts = now();
    std::int64_t id = row ? row->id : create_stream(stream, ts);
    ScopedStatement st =
        writer_.prepare("UPDATE streams SET hidden_through = ?4, tombstoned = ?1, updated_at = ?2 WHERE id = ?3");
    st->bind(1, after.tombstoned ? 1 : 0).bind(2, to_micros(ts)).bind(3, id);
    st->bind(4, static_cast<std::int64_t>(after.hidden_through.value()));
    st->run();
    StreamRow& cached = remember_stream(stream, row);
    cached.id = id;
    cached.state = after;
  }

  // The writer keeps the state of the streams it wrote, so an append does not look its stream up again.
  // The cache holds only while no other connection has written: SQLite's data_version changes when one
  // has, and the cache is then dropped, as it is when a group rolls back. (Even a stale entry could not
  // corrupt data: UNIQUE(stream_id, version) would refuse the insert.)
  void revalidate_stream_cache() {
    std::int64_t version = 0;
    {
      ScopedStatement st = writer_.prepare("PRAGMA data_version");
      st->step();
      version = st->int64(0);
    }
    if (version != data_version_ || stream_cache_.size() > kMaxCachedStreams) stream_cache_.clear();
    data_version_ = version;
  }

  std::optional<StreamRow> cached_stream(std::string_view stream) {
    if (auto it = stream_cache_.find(stream); it != stream_cache_.end()) return it->second;
    return load_stream(writer_, stream);
  }

  StreamRow& remember_stream(std::string_view stream, const std::optional<StreamRow>& row) {
    auto it = stream_cache_.find(stream);
    if (it == stream_cache_.end()) it = stream_cache_.emplace(std::string(stream), row.value_or(StreamRow{})).first;
    return it->second;
  }

  // Called by SQLite after each commit with the WAL's size in pages.
  static int on_commit(void* self, sqlite3* db, const char*, int wal_pages) {
    auto* store = static_cast<SqliteStore*>(self);
    store->wal_pages_ = wal_pages;
    if (wal_pages >= kFinishWalPages) {
      // While the writer keeps appending, the background checkpoint never sees the end of the WAL, so the
      // WAL never restarts from its beginning. Between two groups the writer copies what is left (little:
      // the background thread copied the rest) so the next transaction starts a fresh WAL.
      sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    } else if (wal_pages >= kCheckpointPages) {
      {
        std::lock_guard lock(store->checkpoint_mu_);
        store->checkpoint_wanted_ = true;
        if (!store->checkpointer_.joinable() && !store->stopping_) {
          try {
            store->checkpointer_ = std::thread([store] { store->run_checkpointer(); });
          } catch (const std::system_error&) {
            // No thread: the WAL keeps growing until the writer copies it past kFinishWalPages.
          }
        }
      }
      store->checkpoint_cv_.notify_one();
    }
    return SQLITE_OK;
  }

  void run_checkpointer() {
    std::unique_ptr<Connection> conn;
    std::unique_lock lock(checkpoint_mu_);
    for (;;) {
      checkpoint_cv_.wait(lock, [&] { return checkpoint_wanted_ || stopping_; });
      if (stopping_) return;
      checkpoint_wanted_ = false;
      lock.unlock();
      try {
        if (!conn) conn = std::make_unique<Connection>(writer_.path(), false, options_.busy_timeout_ms);
        // PASSIVE never blocks writers or readers; what it cannot copy now is copied next time.
        sqlite3_wal_checkpoint_v2(conn->handle(), "main", SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      } catch (const Error&) {
        // A failed checkpoint loses nothing (the WAL keeps the data); the next commit asks again.
      }
      lock.lock();
    }
  }

  // Other processes' commits: a thread started by the first wait watches the WAL file with inotify (a
  // commit writes it) and confirms with PRAGMA data_version, which changes when another connection has
  // committed. A write is seen before its commit is visible (the commit frame is synced, then published
  // in the shared index), so after a write it checks again at 1, 2, 4... ms until the version moves.
  // Idle, it sleeps in poll(); without inotify (the WAL file missing) it checks every 5 ms.
  void start_watcher() {
    std::lock_guard lock(watcher_mu_);
    if (watcher_) return;
    std::string path = writer_.path();
    int busy = options_.busy_timeout_ms;
    watcher_ = std::make_unique<detail::CommitWatcher>([this, path, busy](int stop_fd) {
      try {
        watch_wal(path, busy, stop_fd);
      } catch (const std::exception&) {
        // Polling in wait() still sees other processes' commits.
      }
    });
  }

  void watch_wal(const std::string& path, int busy, int stop_fd) {
    Connection conn(path, true, busy);  // reads only
    auto version = [&] {
      ScopedStatement st = conn.prepare("PRAGMA data_version");
      st->step();
      return st->int64(0);
    };
    int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    struct Close {
      int fd;
      ~Close() {
        if (fd >= 0) ::close(fd);
      }
    } close_in{in};
    std::string wal = path + "-wal";
    bool watching = in >= 0 && ::inotify_add_watch(in, wal.c_str(), IN_MODIFY) >= 0;
    std::int64_t last = version();
    int quick = 0;  // the next short check, in ms (0: none pending)
    for (;;) {
      int timeout = quick > 0 ? quick : watching ? 1000 : 5;
      bool written = false;
      if (!detail::CommitWatcher::wait(stop_fd, watching ? in : -1, timeout, &written)) return;
      if (written) {
        char buf[4096];
        while (::read(in, buf, sizeof buf) > 0) {
        }
      } else if (!watching && in >= 0) {
        watching = ::inotify_add_watch(in, wal.c_str(), IN_MODIFY) >= 0;
      }
      std::int64_t v = version();
      if (v != last) {
        last = v;
        quick = 0;
        commit_signal_.committed();
      } else if (written) {
        quick = 1;
      } else if (quick > 0) {
        quick = quick >= 32 ? 0 : quick * 2;
      }
    }
  }

  // A one-shot writer (a CLI `append` process) opens, commits once and closes. SQLite's default close
  // checkpoints the whole WAL into the database file, syncs it and deletes the WAL (and -shm), so every
  // such process paid a checkpoint and the next one created and grew a new WAL (whose first syncs cost
  // more: the file's size changes). Instead the WAL is kept at close (it is synced: what it holds is
  // durable) and is checkpointed only once it is large, so that the next process to open the file, which
  // rebuilds the WAL index by reading every frame of the WAL, reads a bounded amount. SQLite deletes a
  // WAL found beside a missing or empty database file, so a stale WAL cannot leak into a new store.
  void keep_wal_on_close() {
    sqlite3_db_config(writer_.handle(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    int persist = 1;
    sqlite3_file_control(writer_.handle(), "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
  }

  void checkpoint_before_close() noexcept {
    if (wal_pages_ < kCloseCheckpointPages) return;
    // TRUNCATE copies the WAL and empties it, so the next open has nothing to read back. A reader still
    // in the WAL (another process) would make it wait: without a busy timeout it copies what it can
    // and leaves the rest, as a PASSIVE checkpoint would.
    sqlite3_busy_timeout(writer_.handle(), 0);
    sqlite3_wal_checkpoint_v2(writer_.handle(), "main", SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  }

  static constexpr int kCheckpointPages = 1000;
  static constexpr int kFinishWalPages = 4000;
  // The WAL size (pages) past which closing the store checkpoints it (see keep_wal_on_close).
  static constexpr int kCloseCheckpointPages = 1000;

  std::int64_t app_id() {
    ScopedStatement st = writer_.prepare("PRAGMA application_id");
    st->step();
    return st->int64(0);
  }

  SqliteOptions options_;
  bool existed_;  // the file was there before this store opened it
  Connection writer_;
  std::shared_ptr<Shared> shared_;
  std::uint64_t next_position_ = 0;  // valid inside a group's transaction only
  bool writing_ = false;             // the running request has started writing
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, StreamRow, NameHash, std::equal_to<>> stream_cache_;  // writer thread only
  std::int64_t data_version_ = -1;
  static constexpr std::size_t kMaxCachedStreams = 100000;
  detail::CommitSignal commit_signal_;
  std::mutex watcher_mu_;
  std::unique_ptr<detail::CommitWatcher> watcher_;  // after commit_signal_: stopped before it goes
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_wanted_ = false;
  bool stopping_ = false;
  std::thread checkpointer_;  // started under checkpoint_mu_ by the first commit that wants a checkpoint
  int wal_pages_ = 0;         // the WAL's size after our last commit (writer role only, then the destructor)
  std::unique_ptr<SubscriptionRegistry> registry_;
  std::optional<GroupCommit> group_commit_;  // last: its writer thread calls run() until it is reset
};

}  // namespace

std::unique_ptr<EventStore> open_sqlite_store(const std::string& path, SqliteOptions options) {
  if (options.read_cache_kib < 0) {
    throw InvalidArgument(fmt::format("SQLite store '{}': read_cache_kib must be 0 (SQLite's default) or more, not {}",
                                      path, options.read_cache_kib));
  }
  return std::make_unique<SqliteStore>(path, options);
}

}  // namespace sourced
