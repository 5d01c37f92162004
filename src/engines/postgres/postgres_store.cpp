#include "sourced/postgres_store.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "engines/postgres/pg_connection.hpp"
#include "engines/postgres/pg_registry.hpp"
#include "engines/postgres/pg_schema.hpp"
#include "store/append_rules.hpp"
#include "store/commit_signal.hpp"
#include "store/commit_watcher.hpp"
#include "store/filter.hpp"
#include "store/group_commit.hpp"

namespace sourced {
namespace {

using detail::GroupCommit;
using detail::pg::ArrayParam;
using detail::pg::Connection;
using detail::pg::Format;
using detail::pg::Params;
using detail::pg::Pool;
using detail::pg::Result;
using detail::pg::Target;

// Prepared statements, by number; the SQL is in Statements below.
enum Stmt : int {
  kAppendGroup,
  kReadAllForward,
  kReadAllBackward,
  kReadStreamForward,
  kReadStreamBackward,
  kLoadStream,
  kLoadStreamForUpdate,
  kListStreams,
  kHead,
  kStats,
  kLockHead,
  kCreateStream,
  kDeleteStream,
  kStreamNames,
  kReadAllFilteredForward,
  kReadAllFilteredBackward,
  kStatementCount
};

// Columns 0..9 of an event row: position, version, id, type, data, metadata, correlation_id,
// causation_id, created_at, content_type (binary format).
constexpr const char* kEventColumns =
    "e.position, e.version, e.id, e.type, e.data, e.metadata, e.correlation_id, e.causation_id, e.created_at";

// The statements for a schema at `version`: a schema older than migration 3, opened read-only, has no
// content type column and its events read as unknown.
struct Statements {
  Statements(const std::string& schema, int version) {
    auto s = [&](const std::string& sql) { return detail::pg::with_schema(sql, schema); };
    std::string cols = std::string(kEventColumns) + (version >= 3 ? ", e.content_type::int8" : ", 0::int8");
    sql[kAppendGroup] =
        s("SELECT * FROM {schema}.append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)");
    // $all pages return stream ids, not names: joining streams per row cost more than the rest of the
    // query, and the client caches the names (an id's name never changes).
    sql[kReadAllForward] = s("SELECT " + cols +
                             ", e.stream_id FROM {schema}.events e WHERE e.position >= $1 "
                             "ORDER BY e.position LIMIT $2");
    sql[kReadAllBackward] = s("SELECT " + cols +
                              ", e.stream_id FROM {schema}.events e WHERE e.position <= $1 "
                              "ORDER BY e.position DESC LIMIT $2");
    // A filtered page: the head and the matching events of a window of positions, in one statement (one
    // snapshot), so the page can say how far it looked without claiming positions it did not see. The
    // window is [$1, least($2, head)] forward, [greatest(1, least($1, head) - $2 + 1), least($1, head)]
    // backward; $3 the types (null: any), $4..$6 the stream names (see FilterPlan; $4 null: any).
    std::string filtered_where =
        " AND ($3::text[] IS NULL OR e.type = ANY($3::text[])) AND ($4::text IS NULL OR e.stream_id IN "
        "(SELECT st.id FROM {schema}.streams st WHERE st.name = $6::text OR (st.name >= $4::text AND "
        "($5::text IS NULL OR st.name < $5::text))))";
    sql[kReadAllFilteredForward] =
        s("WITH h AS (SELECT position AS head FROM {schema}.head) SELECT e.*, h.head FROM h LEFT JOIN LATERAL "
          "(SELECT " +
          cols +
          ", e.stream_id FROM {schema}.events e WHERE e.position >= $1::bigint AND e.position <= "
          "least($2::bigint, h.head)" +
          filtered_where + " ORDER BY e.position) e ON true ORDER BY e.position");
    sql[kReadAllFilteredBackward] =
        s("WITH h AS (SELECT position AS head FROM {schema}.head) SELECT e.*, h.head FROM h LEFT JOIN LATERAL "
          "(SELECT " +
          cols +
          ", e.stream_id FROM {schema}.events e WHERE e.position <= least($1::bigint, h.head) AND "
          "e.position >= greatest(1, least($1::bigint, h.head) - $2::bigint + 1)" +
          filtered_where + " ORDER BY e.position DESC) e ON true ORDER BY e.position DESC");
    sql[kStreamNames] = s("SELECT id, name FROM {schema}.streams WHERE id = ANY($1)");
    sql[kReadStreamForward] = s("SELECT " + cols +
                                " FROM {schema}.events e WHERE e.stream_id = $1 AND e.version >= $2 "
                                "ORDER BY e.version LIMIT $3");
    sql[kReadStreamBackward] = s("SELECT " + cols +
                                 " FROM {schema}.events e WHERE e.stream_id = $1 AND e.version <= $2 "
                                 "AND e.version > $4 ORDER BY e.version DESC LIMIT $3");
    sql[kLoadStream] =
        s("SELECT id, last_version, hidden_through, tombstoned, created_at, updated_at "
          "FROM {schema}.streams WHERE name = $1");
    sql[kLoadStreamForUpdate] = sql[kLoadStream] + " FOR UPDATE";
    sql[kListStreams] =
        s("SELECT name, last_version, hidden_through, tombstoned, created_at, updated_at "
          "FROM {schema}.streams WHERE name > $1 ORDER BY name LIMIT $2");
    sql[kHead] = s("SELECT position FROM {schema}.head");
    sql[kStats] = s("SELECT (SELECT count(*) FROM {schema}.streams), (SELECT position FROM {schema}.head)");
    sql[kLockHead] = s("SELECT position FROM {schema}.head FOR UPDATE");
    sql[kCreateStream] =
        s("INSERT INTO {schema}.streams (name, last_version, hidden_through, tombstoned, created_at, "
          "updated_at) VALUES ($1, 0, 0, $2, clock_timestamp(), clock_timestamp())");
    sql[kDeleteStream] =
        s("UPDATE {schema}.streams SET hidden_through = last_version, tombstoned = tombstoned OR $2, "
          "updated_at = clock_timestamp() WHERE id = $1");
  }
  std::string sql[kStatementCount];
};

std::string text_of(std::uint64_t v) { return std::to_string(std::min<std::uint64_t>(v, INT64_MAX)); }

// Decodes an event row in binary format (kEventColumns) into `e`; the stream name is set by the caller.
void read_event(const Result& r, int row, RecordedEvent& e) {
  using namespace detail::pg;
  e.position = Position(static_cast<std::uint64_t>(read_int8(r.raw(row, 0))));
  e.version = StreamVersion(static_cast<std::uint64_t>(read_int8(r.raw(row, 1))));
  e.id = read_uuid(r.raw(row, 2));
  e.type.assign(r.get(row, 3));
  e.data.assign(r.get(row, 4));
  e.metadata.assign(r.get(row, 5));
  e.correlation_id = r.is_null(row, 6) ? std::nullopt : std::optional<Uuid>(read_uuid(r.raw(row, 6)));
  e.causation_id = r.is_null(row, 7) ? std::nullopt : std::optional<Uuid>(read_uuid(r.raw(row, 7)));
  e.created_at = read_timestamptz(r.raw(row, 8));
  std::int64_t ct = read_int8(r.raw(row, 9));
  e.content_type = ct == 1 ? ContentType::json : ct == 2 ? ContentType::binary : ContentType::unknown;
}

struct StreamRow {
  std::int64_t id = 0;
  detail::StreamState state;
  Timestamp created_at;
  Timestamp updated_at;
};

// Columns: id|name, last_version, hidden_through, tombstoned, created_at, updated_at (binary).
detail::StreamState stream_state(const Result& r, int row) {
  using namespace detail::pg;
  detail::StreamState s;
  s.exists = true;
  s.last = StreamVersion(static_cast<std::uint64_t>(read_int8(r.raw(row, 1))));
  s.hidden_through = StreamVersion(static_cast<std::uint64_t>(read_int8(r.raw(row, 2))));
  s.tombstoned = r.raw(row, 3)[0] != 0;
  return s;
}

// What the store's objects share with the readers it hands out (which may outlive it).
struct Shared {
  Shared(Target target, const PostgresOptions& o)
      : options(o), pool(std::move(target), o.pool_size), statements(o.schema, detail::pg::latest_schema_version()) {}
  PostgresOptions options;
  Pool pool;
  Statements statements;

  Result run(Stmt id, Params& params, Format format, std::string_view what) {
    // Reads are idempotent: when the link breaks under one (a restarted server, a killed backend), the
    // pool has dropped that connection and one retry on a fresh one hides the hiccup.
    for (int attempt = 0;; ++attempt) {
      try {
        auto c = pool.acquire();
        return c->prepared(id, statements.sql[id], params, format, what);
      } catch (const ConnectionError&) {
        if (attempt > 0) throw;
      }
    }
  }

  std::optional<StreamRow> load_stream(Connection& c, std::string_view name, bool for_update) {
    Params p;
    p.text(std::string(name));
    Stmt id = for_update ? kLoadStreamForUpdate : kLoadStream;
    Result r = c.prepared(id, statements.sql[id], p, Format::binary, "reading a stream's state");
    return row_of(r);
  }
  std::optional<StreamRow> load_stream(std::string_view name) {
    Params p;
    p.text(std::string(name));
    Result r = run(kLoadStream, p, Format::binary, "reading a stream's state");
    return row_of(r);
  }
  // Fills in the stream names of a $all page from the cache, asking the server for the ones it lacks.
  void name_streams(std::vector<RecordedEvent>& events, const std::vector<std::int64_t>& ids) {
    std::vector<std::int64_t> missing;
    {
      std::lock_guard lock(names_mu);
      for (std::size_t i = 0; i < events.size(); ++i) {
        auto it = names.find(ids[i]);
        if (it != names.end()) {
          events[i].stream = it->second;
        } else {
          missing.push_back(ids[i]);
        }
      }
    }
    if (missing.empty()) return;
    std::sort(missing.begin(), missing.end());
    missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
    detail::pg::ArrayParam array(detail::pg::kInt8Oid);
    for (auto id : missing) array.add_int8(id);
    Params p;
    p.binary(array.finish(), detail::pg::kInt8ArrayOid);
    Result r = run(kStreamNames, p, Format::binary, "reading stream names");
    std::lock_guard lock(names_mu);
    // A bound on memory for stores with very many streams: start over rather than grow without end.
    if (names.size() + static_cast<std::size_t>(r.rows()) > kMaxCachedNames) names.clear();
    for (int i = 0; i < r.rows(); ++i) names[detail::pg::read_int8(r.raw(i, 0))] = std::string(r.get(i, 1));
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (!events[i].stream.empty()) continue;
      auto it = names.find(ids[i]);
      if (it == names.end()) throw StorageError("a $all page names a stream id that the streams table lacks");
      events[i].stream = it->second;
    }
  }

  static constexpr std::size_t kMaxCachedNames = 200000;
  std::mutex names_mu;
  std::unordered_map<std::int64_t, std::string> names;

  static std::optional<StreamRow> row_of(const Result& r) {
    using namespace detail::pg;
    if (r.rows() == 0) return std::nullopt;
    StreamRow row;
    row.id = read_int8(r.raw(0, 0));
    row.state = stream_state(r, 0);
    row.created_at = read_timestamptz(r.raw(0, 4));
    row.updated_at = read_timestamptz(r.raw(0, 5));
    return row;
  }
};

class AllPages final : public detail::PageSource {
 public:
  explicit AllPages(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    Params p;
    p.text(text_of(from)).text(std::to_string(limit));
    Result r = shared_->run(direction == Direction::forward ? kReadAllForward : kReadAllBackward, p, Format::binary,
                            "reading $all");
    int n = r.rows();
    out.resize(static_cast<std::size_t>(n));
    ids_.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      read_event(r, i, out[i]);
      out[i].stream.clear();
      ids_[i] = detail::pg::read_int8(r.raw(i, 10));
    }
    shared_->name_streams(out, ids_);
  }

 private:
  std::shared_ptr<Shared> shared_;
  std::vector<std::int64_t> ids_;
};

// A filtered page of `$all`, evaluated by the server (see kReadAllFilteredForward).
class FilteredAllPages final : public detail::PageSource {
 public:
  FilteredAllPages(std::shared_ptr<Shared> shared, const EventFilter& filter)
      : shared_(std::move(shared)), plan_(detail::plan_filter(filter)) {}

  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    limit = std::max(limit, kFilteredScan);
    bool forward = direction == Direction::forward;
    from = std::min<std::uint64_t>(forward ? std::max<std::uint64_t>(from, 1) : from, INT64_MAX);
    std::uint64_t want = std::min<std::uint64_t>(from + limit - 1, INT64_MAX);
    Params p;
    if (forward) {
      p.text(std::to_string(from)).text(std::to_string(want));
    } else {
      p.text(std::to_string(from)).text(std::to_string(limit));
    }
    if (plan_.types.empty()) {
      p.null();
    } else {
      detail::pg::ArrayParam types(detail::pg::kTextOid);
      for (const auto& t : plan_.types) types.add_bytes(t);
      p.binary(types.finish(), detail::pg::kTextArrayOid);
    }
    if (plan_.by_stream) {
      p.text(plan_.lo);
      plan_.hi ? p.text(*plan_.hi) : p.null();
      plan_.exact ? p.text(*plan_.exact) : p.null();
    } else {
      p.null().null().null();
    }
    Result r = shared_->run(forward ? kReadAllFilteredForward : kReadAllFilteredBackward, p, Format::binary,
                            "reading $all with a filter");
    int n = r.rows();
    auto head = n > 0 ? static_cast<std::uint64_t>(detail::pg::read_int8(r.raw(0, 11))) : 0;
    if (forward) {
      std::uint64_t hi = std::min(want, head);
      scan_.reached_end = want >= head;
      scan_.last_key = hi < from ? from - 1 : hi;
    } else {
      std::uint64_t hi = std::min(from, head);
      std::uint64_t lo = hi >= limit ? hi - limit + 1 : 1;
      scan_.reached_end = lo <= 1;
      scan_.last_key = hi == 0 ? 1 : lo;
    }
    out.clear();
    ids_.clear();
    for (int i = 0; i < n; ++i) {
      if (r.is_null(i, 0)) continue;  // the head row of a window with no match
      read_event(r, i, out.emplace_back());
      out.back().stream.clear();
      ids_.push_back(detail::pg::read_int8(r.raw(i, 10)));
    }
    shared_->name_streams(out, ids_);
  }
  std::optional<Scan> last_scan() const override { return scan_; }

 private:
  static constexpr std::size_t kFilteredScan = 4096;
  std::shared_ptr<Shared> shared_;
  detail::FilterPlan plan_;
  std::vector<std::int64_t> ids_;
  Scan scan_;
};

class StreamPages final : public detail::PageSource {
 public:
  StreamPages(std::shared_ptr<Shared> shared, std::string stream, std::int64_t stream_id, std::uint64_t hidden)
      : shared_(std::move(shared)), stream_(std::move(stream)), stream_id_(stream_id), hidden_(hidden) {}

  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    bool forward = direction == Direction::forward;
    Params p;
    p.text(std::to_string(stream_id_))
        .text(text_of(forward ? std::max(from, hidden_ + 1) : from))
        .text(std::to_string(limit));
    if (!forward) p.text(text_of(hidden_));
    Result r = shared_->run(forward ? kReadStreamForward : kReadStreamBackward, p, Format::binary,
                            fmt::format("reading stream '{}'", stream_));
    int n = r.rows();
    out.resize(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      read_event(r, i, out[i]);
      out[i].stream = stream_;
    }
  }

 private:
  std::shared_ptr<Shared> shared_;
  std::string stream_;
  std::int64_t stream_id_;
  std::uint64_t hidden_;
};

int expected_kind(ExpectedVersion e) {
  switch (e.kind()) {
    case ExpectedVersion::Kind::any:
      return 0;
    case ExpectedVersion::Kind::no_stream:
      return 1;
    case ExpectedVersion::Kind::stream_exists:
      return 2;
    case ExpectedVersion::Kind::exact:
      return 3;
  }
  return 0;
}

// One append waiting for (or taking part in) a group commit.
struct AppendRequest final : GroupCommit::Request {
  AppendRequest(std::string_view s, ExpectedVersion e, const std::vector<detail::PreparedEvent>* ev)
      : Request(ev->size(), size_of(*ev)), stream(s), expected(e), events(ev) {}
  static std::size_t size_of(const std::vector<detail::PreparedEvent>& events) {
    std::size_t size = 0;
    for (const auto& e : events) size += e.data->data.size() + e.data->metadata.size() + e.data->type.size();
    return size;
  }
  std::string_view stream;
  ExpectedVersion expected;
  const std::vector<detail::PreparedEvent>* events;
  AppendResult result{};
};

class PostgresStore final : public EventStore, private GroupCommit::Engine {
 public:
  PostgresStore(Target target, PostgresOptions options) {
    shared_ = std::make_shared<Shared>(std::move(target), options);
    {
      auto c = shared_->pool.acquire();
      int version =
          detail::pg::migrate(*c, shared_->pool.target(), options.schema, options.create_if_missing, options.read_only);
      // Before any reader exists: nothing else uses the statements yet.
      shared_->statements = Statements(options.schema, version);
      detail::pg::RegistryHost host;
      host.pool = &shared_->pool;
      host.schema = options.schema;
      host.read_only = options.read_only;
      host.schema_version = version;
      registry_ = detail::pg::make_registry(std::move(host));
    }
    if (options.read_only) return;  // appends are refused before they reach the group commit
    detail::GroupLimits limits;
    limits.max_events = options.max_group_events;
    limits.max_appends = options.max_group_appends;
    limits.max_bytes = kMaxGroupBytes;
    group_commit_.emplace(static_cast<GroupCommit::Engine&>(*this), limits);
  }

  ~PostgresStore() override {
    commit_signal_.close();
    {
      std::lock_guard lock(listener_mu_);
      listener_.reset();
    }
    group_commit_.reset();  // runs what is queued; its hooks use shared_
  }

  AppendResult append(std::string_view stream, ExpectedVersion expected, std::span<const EventData> events) override {
    auto prepared = detail::prepare_append(stream, events);
    refuse_if_read_only(stream);
    AppendRequest req(stream, expected, &prepared);
    group_commit_->submit(req);
    return req.result;
  }

  EventReader read_stream(std::string_view stream, ReadStreamOptions options) override {
    detail::validate_stream_id(stream);
    auto row = shared_->load_stream(stream);
    detail::StreamState state = row ? row->state : detail::StreamState{};
    auto pages =
        std::make_shared<StreamPages>(shared_, std::string(stream), row ? row->id : 0, state.hidden_through.value());
    return detail::make_stream_reader(stream, state, options, std::move(pages), shared_->options.read_page_size);
  }

  EventReader read_all(ReadAllOptions options) override {
    if (options.filter) {
      return detail::make_all_reader(options, std::make_shared<FilteredAllPages>(shared_, *options.filter),
                                     shared_->options.read_page_size);
    }
    return detail::make_all_reader(options, std::make_shared<AllPages>(shared_), shared_->options.read_page_size);
  }

  std::optional<StreamInfo> stream_info(std::string_view stream) override {
    detail::validate_stream_id(stream);
    auto row = shared_->load_stream(stream);
    if (!row) return std::nullopt;
    return detail::make_info(std::string(stream), row->state, row->created_at, row->updated_at);
  }

  std::vector<StreamInfo> list_streams(std::string_view after, std::size_t limit) override {
    Params p;
    p.text(std::string(after)).text(text_of(limit));
    Result r = shared_->run(kListStreams, p, Format::binary, "listing streams");
    std::vector<StreamInfo> out;
    for (int i = 0; i < r.rows(); ++i) {
      out.push_back(detail::make_info(std::string(r.get(i, 0)), stream_state(r, i),
                                      detail::pg::read_timestamptz(r.raw(i, 4)),
                                      detail::pg::read_timestamptz(r.raw(i, 5))));
    }
    return out;
  }

  void delete_stream(std::string_view stream, ExpectedVersion expected, DeleteMode mode) override {
    detail::validate_delete(stream);
    refuse_if_read_only(stream);
    auto c = shared_->pool.acquire();
    std::string what = fmt::format("deleting stream '{}'", stream);
    auto& sql = shared_->statements.sql;
    c->exec("BEGIN", what);
    try {
      // Deletes take the head lock like appends do, so every write is serialised and a delete can never
      // race an append that creates the same stream.
      Params none;
      c->prepared(kLockHead, sql[kLockHead], none, Format::text, what);
      auto row = shared_->load_stream(*c, stream, true);
      detail::StreamState state = row ? row->state : detail::StreamState{};
      detail::StreamState after = detail::decide_delete(stream, state, expected, mode);
      Params p;
      std::string tomb = after.tombstoned ? "true" : "false";
      if (row) {
        p.text(std::to_string(row->id)).text(tomb);
        c->prepared(kDeleteStream, sql[kDeleteStream], p, Format::text, what);
      } else {
        p.text(std::string(stream)).text(tomb);
        c->prepared(kCreateStream, sql[kCreateStream], p, Format::text, what);
      }
      c->exec("COMMIT", what);
    } catch (...) {
      if (c->ok()) PQclear(PQexec(c->handle(), "ROLLBACK"));
      throw;
    }
  }

  Position head_position() override {
    Params none;
    Result r = shared_->run(kHead, none, Format::text, "reading the head position");
    return Position(static_cast<std::uint64_t>(r.int8(0, 0)));
  }

  Position wait_for_events_after(Position after, std::chrono::milliseconds timeout, std::stop_token stop) override {
    // This process's appends wake waiters at once; other processes' through LISTEN (a notification per
    // commit, see migration 2), and by polling the head should one be lost.
    start_listener();
    // While the listener is connected, a poll only covers a lost notification: it can be rare.
    auto poll = listening_ ? std::chrono::milliseconds(250) : std::chrono::milliseconds(50);
    return commit_signal_.wait(
        after, timeout, std::move(stop), [this] { return head_position(); }, poll);
  }

  SubscriptionRegistry& subscriptions() override { return *registry_; }

  StoreStats stats() override {
    Params none;
    Result r = shared_->run(kStats, none, Format::text, "reading statistics");
    StoreStats s;
    s.engine = "postgres";
    s.streams = static_cast<std::uint64_t>(r.int8(0, 0));
    s.head = Position(static_cast<std::uint64_t>(r.int8(0, 1)));
    return s;
  }

 private:
  void refuse_if_read_only(std::string_view stream) const {
    if (shared_->options.read_only) {
      throw InvalidArgument(
          fmt::format("the PostgreSQL store at {} was opened read-only: stream '{}' cannot be written",
                      shared_->pool.target().display, stream));
    }
  }

  // Group commit (detail::GroupCommit): each group of appends goes to the server as one append_group
  // call: one round trip, one transaction, one commit.

  // The function decides each append against what is stored, and writes a group's events at the end, so
  // two appends sharing a caller-given id must not be in one group: the second must see the first's
  // events.
  bool admit(const GroupCommit::Request& base, bool first) override {
    const auto& r = static_cast<const AppendRequest&>(base);
    if (first) group_ids_.clear();
    for (const auto& e : *r.events) {
      if (e.id_given && group_ids_.contains(e.id)) return false;
    }
    for (const auto& e : *r.events) {
      if (e.id_given) group_ids_.insert(e.id);
    }
    return true;
  }

  GroupCommit::Request* run(std::span<GroupCommit::Request* const> base) override {
    std::vector<AppendRequest*> group;
    group.reserve(base.size());
    for (auto* r : base) group.push_back(static_cast<AppendRequest*>(r));
    run_group(group);
    return nullptr;
  }

  void committed(std::span<GroupCommit::Request* const>) noexcept override { commit_signal_.committed(); }

  // PostgreSQL refuses a parameter over 1 GB; groups stay well below it, so one large append cannot make
  // the appends grouped with it fail. An append larger than this on its own still goes alone.
  static constexpr std::size_t kMaxGroupBytes = 64u << 20;

  void run_group(const std::vector<AppendRequest*>& group) {
    using namespace detail::pg;
    ArrayParam streams(kTextOid), kinds(kInt4Oid), expected(kInt8Oid), starts(kInt4Oid), counts(kInt4Oid),
        lookups(kBoolOid), reqs(kInt4Oid), ids(kUuidOid), given(kBoolOid), types(kTextOid), data(kByteaOid),
        metadata(kByteaOid), correlation(kUuidOid), causation(kUuidOid), content_types(kInt4Oid);
    std::int32_t ordinal = 1;
    for (std::size_t i = 0; i < group.size(); ++i) {
      const AppendRequest& r = *group[i];
      streams.add_bytes(r.stream);
      kinds.add_int4(expected_kind(r.expected));
      expected.add_int8(static_cast<std::int64_t>(r.expected.version().value()));
      starts.add_int4(ordinal);
      counts.add_int4(static_cast<std::int32_t>(r.events->size()));
      bool lookup = false;
      for (const auto& e : *r.events) {
        lookup = lookup || e.id_given;
        reqs.add_int4(static_cast<std::int32_t>(i + 1));
        ids.add_uuid(e.id);
        given.add_bool(e.id_given);
        types.add_bytes(e.data->type);
        data.add_bytes(e.data->data);
        metadata.add_bytes(e.data->metadata);
        correlation.add_uuid(e.data->correlation_id);
        causation.add_uuid(e.data->causation_id);
        content_types.add_int4(static_cast<std::int32_t>(e.data->content_type));
        ++ordinal;
      }
      lookups.add_bool(lookup);
    }
    Params p;
    p.binary(streams.finish(), kTextArrayOid)
        .binary(kinds.finish(), kInt4ArrayOid)
        .binary(expected.finish(), kInt8ArrayOid)
        .binary(starts.finish(), kInt4ArrayOid)
        .binary(counts.finish(), kInt4ArrayOid)
        .binary(lookups.finish(), kBoolArrayOid)
        .binary(reqs.finish(), kInt4ArrayOid)
        .binary(ids.finish(), kUuidArrayOid)
        .binary(given.finish(), kBoolArrayOid)
        .binary(types.finish(), kTextArrayOid)
        .binary(data.finish(), kByteaArrayOid)
        .binary(metadata.finish(), kByteaArrayOid)
        .binary(correlation.finish(), kUuidArrayOid)
        .binary(causation.finish(), kUuidArrayOid)
        .binary(content_types.finish(), kInt4ArrayOid);

    std::optional<Result> result;
    std::optional<Pool::Lease> c;
    try {
      c.emplace(shared_->pool.acquire());  // a failure here sent nothing: its error needs no caveat
    } catch (...) {
      for (AppendRequest* r : group) r->error = std::current_exception();
      return;
    }
    try {
      std::string what = group.size() == 1 ? fmt::format("appending to stream '{}'", group[0]->stream)
                                           : fmt::format("appending to {} streams", group.size());
      result.emplace((*c)->prepared(kAppendGroup, shared_->statements.sql[kAppendGroup], p, Format::text, what));
    } catch (const ConnectionError& e) {
      // The statement ran in its own transaction: it committed whole or not at all.
      auto err =
          std::make_exception_ptr(ConnectionError(
              std::string(e.what()) + "; the append was committed whole or not at all: read the stream, or repeat the "
                                      "append with the same event ids (which is idempotent), to find out which"));
      for (AppendRequest* r : group) r->error = err;
      return;
    } catch (const detail::pg::ServerError& e) {
      // A unique violation can only be a generated event id that is already stored (caller-given ids are
      // looked up first, under the head lock). Nothing was written: run each append alone, so only the
      // one whose id collided fails, as on the other engines.
      if (e.sqlstate() == "23505") {
        c.reset();
        if (group.size() > 1) {
          for (AppendRequest* r : group) run_group({r});
        } else {
          group[0]->error = std::make_exception_ptr(detail::generated_id_collision(group[0]->stream));
        }
        return;
      }
      for (AppendRequest* r : group) r->error = std::current_exception();
      return;
    } catch (...) {
      for (AppendRequest* r : group) r->error = std::current_exception();
      return;
    }
    try {
      finish_group(group, *result);
    } catch (const Error& e) {
      // An answer we cannot read: the appends committed (or not) as the server decided, but we cannot
      // tell each caller its positions. Say so rather than guess.
      auto err =
          std::make_exception_ptr(StorageError(
              std::string(e.what()) + "; the group of appends was committed whole or not at all: read the streams, or "
                                      "repeat the appends with the same event ids (which is idempotent), to find out"));
      for (AppendRequest* r : group) r->error = err;
    }
  }

  // Turns append_group's rows into each append's result or error.
  // Turns append_group's rows into each append's result or error. Throws StorageError, before any
  // request is answered, when a row cannot be read: a dropped id or a zero position would be silent.
  void finish_group(const std::vector<AppendRequest*>& group, const Result& res) {
    std::vector<std::map<Uuid, detail::StoredLocation>> found(group.size());
    std::vector<bool> answered(group.size(), false);
    std::vector<std::optional<detail::StreamState>> states(group.size());
    std::vector<std::uint64_t> first_positions(group.size(), 0);
    std::vector<bool> written(group.size(), false);
    for (int row = 0; row < res.rows(); ++row) {
      auto n = res.int8(row, 0);
      if (n < 1 || static_cast<std::uint64_t>(n) > group.size()) {
        throw StorageError(
            fmt::format("PostgreSQL's append_group returned request number {} for a group of {}", n, group.size()));
      }
      auto i = static_cast<std::size_t>(n - 1);
      if (!res.is_null(row, 7)) {
        found[i][res.uuid(row, 7)] = {std::string(res.get(row, 8)),
                                      StreamVersion(static_cast<std::uint64_t>(res.int8(row, 9))),
                                      Position(static_cast<std::uint64_t>(res.int8(row, 10)))};
        continue;
      }
      answered[i] = true;
      detail::StreamState& state = states[i].emplace();
      state.exists = res.boolean(row, 2);
      state.last = StreamVersion(static_cast<std::uint64_t>(res.int8(row, 3)));
      state.hidden_through = StreamVersion(static_cast<std::uint64_t>(res.int8(row, 4)));
      state.tombstoned = res.boolean(row, 5);
      written[i] = res.boolean(row, 1);
      if (written[i] && !group[i]->events->empty()) first_positions[i] = static_cast<std::uint64_t>(res.int8(row, 6));
    }
    // Every row read: now answer each append.
    for (std::size_t i = 0; i < group.size(); ++i) {
      if (!answered[i]) continue;
      AppendRequest& r = *group[i];
      const detail::StreamState& state = *states[i];
      if (written[i]) {
        auto n = r.events->size();
        r.result.first_version = state.last.next();
        r.result.last_version = StreamVersion(state.last.value() + n);
        if (n > 0) {
          r.result.first_position = Position(first_positions[i]);
          r.result.last_position = Position(first_positions[i] + n - 1);
        }
        continue;
      }
      // Not written: the shared rules decide whether it repeats an earlier append or which error it is.
      try {
        auto& where = found[i];
        auto replay = detail::check_replay(r.stream, state, r.expected, *r.events,
                                           [&](const Uuid& id) -> std::optional<detail::StoredLocation> {
                                             auto it = where.find(id);
                                             if (it == where.end()) return std::nullopt;
                                             return it->second;
                                           });
        if (replay) {
          r.result = *replay;
        } else {
          detail::check_expected(r.stream, state, r.expected);
          throw StorageError(
              fmt::format("internal error: PostgreSQL declined the append to stream '{}' but the "
                          "append rules accept it",
                          r.stream));
        }
      } catch (...) {
        r.error = std::current_exception();
      }
    }
    for (std::size_t i = 0; i < group.size(); ++i) {
      if (!answered[i] && !group[i]->error) {
        group[i]->error = std::make_exception_ptr(StorageError(fmt::format(
            "internal error: PostgreSQL returned no outcome for the append to stream '{}'", group[i]->stream)));
      }
    }
  }

  // A thread, started by the first wait, that holds its own connection LISTENing on the store's commit
  // channel and wakes the waiters on each notification. When the link breaks it reconnects (after 1 s)
  // and wakes the waiters once, as it may have missed a notification meanwhile.
  void start_listener() {
    std::lock_guard lock(listener_mu_);
    if (listener_) return;
    listener_ = std::make_unique<detail::CommitWatcher>([this](int stop_fd) {
      std::string listen = "LISTEN " + detail::pg::quote_ident(detail::pg::commit_channel(shared_->options.schema));
      for (;;) {
        try {
          Connection c(shared_->pool.target());
          c.exec(listen.c_str(), "listening for commits");
          listening_ = true;
          commit_signal_.committed();
          for (;;) {
            bool ready = false;
            if (!detail::CommitWatcher::wait(stop_fd, PQsocket(c.handle()), 60000, &ready)) {
              listening_ = false;
              return;
            }
            if (!ready) continue;
            if (!PQconsumeInput(c.handle())) break;
            bool notified = false;
            while (PGnotify* n = PQnotifies(c.handle())) {
              PQfreemem(n);
              notified = true;
            }
            if (notified) commit_signal_.committed();
          }
        } catch (const std::exception&) {
          // Not listening: waiters poll every 50 ms until we are back.
        }
        listening_ = false;
        if (!detail::CommitWatcher::wait(stop_fd, -1, 1000)) return;
      }
    });
  }

  std::shared_ptr<Shared> shared_;
  std::unique_ptr<SubscriptionRegistry> registry_;  // uses shared_->pool
  detail::CommitSignal commit_signal_;
  std::atomic<bool> listening_{false};
  std::mutex listener_mu_;
  std::unique_ptr<detail::CommitWatcher> listener_;  // stopped in the destructor, before commit_signal_ goes
  std::unordered_set<Uuid> group_ids_;               // admit() only (the writer thread)
  std::optional<GroupCommit> group_commit_;          // last: its writer thread calls the hooks until it is reset
};

bool is_plain_identifier(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<EventStore> open_postgres_store(const std::string& url, PostgresOptions options) {
  Target target = detail::pg::parse_target(url);
  if (target.schema) options.schema = *target.schema;
  if (target.pool_size) options.pool_size = *target.pool_size;
  if (!is_plain_identifier(options.schema)) {
    throw InvalidArgument(
        fmt::format("the PostgreSQL schema name '{}' must be 1 to 63 of a-z, 0-9 and _, not "
                    "starting with a digit",
                    options.schema));
  }
  if (options.pool_size == 0) throw InvalidArgument("the PostgreSQL pool_size must be at least 1");
  if (options.read_page_size == 0) options.read_page_size = 1;
  return std::make_unique<PostgresStore>(std::move(target), std::move(options));
}

}  // namespace sourced
