#include "engines/postgres/pg_registry.hpp"

#include <map>
#include <mutex>
#include <set>

#include <fmt/format.h>

#include "engines/postgres/pg_schema.hpp"
#include "store/subscription_rules.hpp"

namespace sourced::detail::pg {
namespace {

inline constexpr Oid kTimestamptzOid = 1184;
inline constexpr Oid kTimestamptzArrayOid = 1185;
constexpr std::int64_t kPgEpochMicros = 946684800LL * 1000000LL;

std::int64_t pg_micros(Timestamp t) { return t.time_since_epoch().count() - kPgEpochMicros; }

std::string int8_bytes(std::int64_t v) {
  std::string out(8, '\0');
  auto u = static_cast<std::uint64_t>(v);
  for (int i = 7; i >= 0; --i, u >>= 8) out[i] = static_cast<char>(u & 0xFF);
  return out;
}
std::int32_t read_int4(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return static_cast<std::int32_t>(v);
}
std::string i8(std::uint64_t v) { return std::to_string(v); }  // the shared rules keep keys below 2^63

// Columns of an info row, binary format; $1 is the schema's name. in_flight reads 0 when nobody holds the
// lease (what a consumer killed while running last reported).
constexpr const char* kInfoColumns =
    "s.name, s.stream, s.filter::text, s.start_after, s.max_in_flight, s.max_attempts, s.checkpoint, "
    "(SELECT count(*) FROM {schema}.subscription_parked p WHERE p.subscription_id = s.id), "
    "CASE WHEN EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.classid = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND l.objid = s.id::int8::oid "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) "
    "THEN s.in_flight ELSE 0::int8 END, "
    "s.last_error, s.created_at, s.updated_at, s.id::int8";

PersistentSubscriptionInfo read_info(const Result& r, int row) {
  PersistentSubscriptionInfo info;
  info.config.name.assign(r.get(row, 0));
  info.config.stream.assign(r.get(row, 1));
  if (!r.is_null(row, 2)) info.config.filter = filter_from_json(r.get(row, 2));
  info.config.start_after = static_cast<std::uint64_t>(read_int8(r.raw(row, 3)));
  info.config.max_in_flight = static_cast<std::uint32_t>(read_int4(r.raw(row, 4)));
  info.config.max_attempts = static_cast<std::uint32_t>(read_int4(r.raw(row, 5)));
  info.checkpoint = static_cast<std::uint64_t>(read_int8(r.raw(row, 6)));
  info.parked = static_cast<std::uint64_t>(read_int8(r.raw(row, 7)));
  info.in_flight = static_cast<std::uint64_t>(read_int8(r.raw(row, 8)));
  info.last_error.assign(r.get(row, 9));
  info.created_at = read_timestamptz(r.raw(row, 10));
  info.updated_at = read_timestamptz(r.raw(row, 11));
  info.id = static_cast<std::uint64_t>(read_int8(r.raw(row, 12)));
  return info;
}

// The advisory lock of a subscription: the two-int form (classid, objid), keyed by the OID of the store's
// schema and the subscription's id. Both are unique within the database (advisory locks are per
// database), so no two subscriptions share a lock, in this store or any other; ids are never reused.
struct LockKey {
  std::uint32_t schema_oid;
  std::int32_t id;
  // pg_try_advisory_lock(int4, int4) takes signed ints; pg_locks shows the same bits as oids.
  std::string key1() const { return std::to_string(static_cast<std::int32_t>(schema_oid)); }
  std::string key2() const { return std::to_string(id); }
};

// The lease: a session advisory lock held by a connection that only the lease uses. The server releases
// it when the connection closes, however it closes (the process killed, the link broken).
class AdvisoryLease final : public SubscriptionLease {
 public:
  AdvisoryLease(std::unique_ptr<Connection> c, LockKey key)
      : SubscriptionLease(static_cast<std::uint64_t>(key.id)), conn_(std::move(c)), key_(key) {}
  ~AdvisoryLease() override {
    // Unlocked before the connection closes, so the next consumer can take it at once: a closed
    // connection's backend lets go of its locks only once it has exited.
    try {
      if (conn_->ok()) {
        Params p;
        p.text(key_.key1()).text(key_.key2());
        conn_->query("SELECT pg_advisory_unlock($1::int4, $2::int4)", p, Format::text, "releasing a lease");
      }
    } catch (const Error&) {
      // Closing the connection below releases it anyway.
    }
  }

  bool held() override {
    try {
      Params p;
      p.text(std::to_string(key_.schema_oid)).text(key_.key2());
      Result r = conn_->query(
          "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted "
          "AND objsubid = 2 AND classid = $1::oid AND objid = $2::int8::oid",
          p, Format::text, "checking a lease");
      return r.int8(0, 0) > 0;
    } catch (const Error&) {
      return false;  // the session is gone, and its lock with it
    }
  }

 private:
  std::unique_ptr<Connection> conn_;
  LockKey key_;
};

class PgRegistry final : public SubscriptionRegistry {
 public:
  explicit PgRegistry(RegistryHost host) : host_(std::move(host)) {}

  void create(const PersistentSubscriptionConfig& config) override {
    validate_subscription_config(config);
    refuse_if_read_only(config.name, "created");
    Params p;
    p.text(config.name).text(config.stream);
    if (auto f = filter_to_json(config.filter)) {
      p.text(*f);
    } else {
      p.null();
    }
    p.text(i8(config.start_after)).text(std::to_string(config.max_in_flight));
    p.text(std::to_string(config.max_attempts)).binary(int8_bytes(pg_micros(now())), kTimestamptzOid);
    Result r = write(
        "INSERT INTO {schema}.subscriptions (name, stream, filter, start_after, max_in_flight, max_attempts, "
        "checkpoint, created_at, updated_at) VALUES ($1, $2, $3::jsonb, $4::int8, $5::int4, $6::int4, $4::int8, $7, "
        "$7) ON CONFLICT (name) DO NOTHING RETURNING id",
        p, fmt::format("creating subscription '{}'", config.name));
    if (r.rows() == 0) throw SubscriptionExists(config.name);
  }

  bool remove(std::string_view name) override {
    validate_subscription_name(name);
    refuse_if_read_only(name, "deleted");
    Params p;
    p.text(std::string(name));
    // subscription_parked rows go with it (ON DELETE CASCADE).
    Result r = write("DELETE FROM {schema}.subscriptions WHERE name = $1 RETURNING id", p,
                     fmt::format("deleting subscription '{}'", name));
    return r.rows() > 0;
  }

  void update_limits(std::string_view name, std::uint32_t max_in_flight, std::uint32_t max_attempts) override {
    validate_subscription_config(
        {.name = std::string(name), .max_in_flight = max_in_flight, .max_attempts = max_attempts});
    refuse_if_read_only(name, "updated");
    Params p;
    p.text(std::string(name)).text(std::to_string(max_in_flight)).text(std::to_string(max_attempts));
    p.binary(int8_bytes(pg_micros(now())), kTimestamptzOid);
    Result r = write(
        "UPDATE {schema}.subscriptions SET max_in_flight = $2::int4, max_attempts = $3::int4, updated_at = $4 "
        "WHERE name = $1 RETURNING id",
        p, fmt::format("updating subscription '{}'", name));
    if (r.rows() == 0) throw SubscriptionNotFound(std::string(name));
  }

  std::optional<PersistentSubscriptionInfo> get(std::string_view name) override {
    validate_subscription_name(name);
    if (!has_tables()) return std::nullopt;
    Params p;
    p.text(host_.schema).text(std::string(name));
    // One statement: the row and its parked count come from one snapshot.
    Result r = read(std::string("SELECT ") + kInfoColumns + " FROM {schema}.subscriptions s WHERE s.name = $2", p,
                    Format::binary, fmt::format("reading subscription '{}'", name));
    if (r.rows() == 0) return std::nullopt;
    return read_info(r, 0);
  }

  std::vector<PersistentSubscriptionInfo> list() override {
    std::vector<PersistentSubscriptionInfo> out;
    if (!has_tables()) return out;
    Params schema;
    schema.text(host_.schema);
    Result r = read(std::string("SELECT ") + kInfoColumns + " FROM {schema}.subscriptions s ORDER BY s.name", schema,
                    Format::binary, "listing subscriptions");
    for (int i = 0; i < r.rows(); ++i) out.push_back(read_info(r, i));
    return out;
  }

  void save_progress(std::string_view name, const SubscriptionProgress& progress) override {
    validate_subscription_name(name);
    validate_progress(progress);
    refuse_if_read_only(name, "written");
    Timestamp ts = now();
    // One statement, so one transaction. Its parts see the same snapshot and may not touch a row twice,
    // so the shared order (unpark, then park, the last report of a key winning) is resolved here: a key
    // parked again is not also deleted.
    std::map<std::uint64_t, ParkedEvent> parked;
    for (const auto& e : progress.newly_parked) parked.insert_or_assign(e.key, parked_as_stored(e, ts));
    ArrayParam unparked(kInt8Oid), keys(kInt8Oid), positions(kInt8Oid), streams(kTextOid), versions(kInt8Oid),
        ids(kUuidOid), types(kTextOid), attempts(kInt4Oid), errors(kTextOid), parked_at(kTimestamptzOid);
    for (auto k : std::set<std::uint64_t>(progress.unparked.begin(), progress.unparked.end())) {
      if (!parked.count(k)) unparked.add_int8(static_cast<std::int64_t>(k));
    }
    for (const auto& [key, e] : parked) {
      keys.add_int8(static_cast<std::int64_t>(key));
      positions.add_int8(static_cast<std::int64_t>(e.position.value()));
      streams.add_bytes(e.stream);
      versions.add_int8(static_cast<std::int64_t>(e.version.value()));
      ids.add_uuid(e.event_id);
      types.add_bytes(e.type);
      attempts.add_int4(static_cast<std::int32_t>(e.attempts));
      errors.add_bytes(e.error);
      parked_at.add_int8(pg_micros(e.parked_at));
    }
    Params p;
    p.text(std::string(name)).binary(unparked.finish(), kInt8ArrayOid).binary(keys.finish(), kInt8ArrayOid);
    p.binary(positions.finish(), kInt8ArrayOid).binary(streams.finish(), kTextArrayOid);
    p.binary(versions.finish(), kInt8ArrayOid).binary(ids.finish(), kUuidArrayOid);
    p.binary(types.finish(), kTextArrayOid).binary(attempts.finish(), kInt4ArrayOid);
    p.binary(errors.finish(), kTextArrayOid).binary(parked_at.finish(), kTimestamptzArrayOid);
    p.text(i8(progress.checkpoint)).text(i8(progress.in_flight));
    if (progress.last_error) {
      p.text(*progress.last_error);
    } else {
      p.null();
    }
    p.binary(int8_bytes(pg_micros(ts)), kTimestamptzOid).text(i8(progress.subscription_id));
    // Another id: the consumer's subscription was deleted (and one of the same name created).
    Result r = write(
        "WITH s AS (SELECT id FROM {schema}.subscriptions WHERE name = $1 AND ($16::int8 = 0 OR id = $16::int8) "
        "  FOR UPDATE), "
        "del AS (DELETE FROM {schema}.subscription_parked p USING s "
        "  WHERE p.subscription_id = s.id AND p.key = ANY($2)), "
        "ins AS (INSERT INTO {schema}.subscription_parked (subscription_id, key, position, stream, version, "
        "  event_id, type, attempts, error, parked_at, replay_requested) "
        "  SELECT s.id, u.key, u.position, u.stream, u.version, u.event_id, u.type, u.attempts, u.error, "
        "  u.parked_at, false FROM s, unnest($3, $4, $5, $6, $7, $8, $9, $10, $11) "
        "  AS u(key, position, stream, version, event_id, type, attempts, error, parked_at) "
        "  ON CONFLICT (subscription_id, key) DO UPDATE SET position = excluded.position, stream = "
        "  excluded.stream, version = excluded.version, event_id = excluded.event_id, type = excluded.type, "
        "  attempts = excluded.attempts, error = excluded.error, parked_at = excluded.parked_at, "
        "  replay_requested = false), "
        "upd AS (UPDATE {schema}.subscriptions t SET checkpoint = greatest(t.checkpoint, $12::int8), "
        "  in_flight = $13::int8, last_error = coalesce($14::text, t.last_error), updated_at = $15 "
        "  FROM s WHERE t.id = s.id RETURNING t.id) "
        "SELECT id FROM upd",
        p, fmt::format("saving the progress of subscription '{}'", name));
    if (r.rows() == 0) throw SubscriptionNotFound(std::string(name));
  }

  std::vector<ParkedEvent> parked(std::string_view name, std::uint64_t after_key, std::size_t limit) override {
    validate_subscription_name(name);
    if (!has_tables()) throw SubscriptionNotFound(std::string(name));
    Params p;
    p.text(std::string(name)).text(i8(std::min<std::uint64_t>(after_key, INT64_MAX)));
    p.text(i8(std::min<std::uint64_t>(limit, INT64_MAX)));
    // One statement: a first row (all NULL) says the subscription exists, then its parked events.
    Result r = read(
        "SELECT * FROM (SELECT NULL::int8 AS key, NULL::int8, NULL::text, NULL::int8, NULL::uuid, NULL::text, "
        "NULL::int4, NULL::text, NULL::timestamptz, NULL::bool FROM {schema}.subscriptions WHERE name = $1 "
        "UNION ALL (SELECT p.key, p.position, p.stream, p.version, p.event_id, p.type, p.attempts, p.error, "
        "p.parked_at, p.replay_requested FROM {schema}.subscription_parked p JOIN {schema}.subscriptions s "
        "ON s.id = p.subscription_id WHERE s.name = $1 AND p.key > $2::int8 ORDER BY p.key LIMIT $3::int8)) x "
        "ORDER BY key NULLS FIRST",
        p, Format::binary, fmt::format("reading the parked events of subscription '{}'", name));
    if (r.rows() == 0) throw SubscriptionNotFound(std::string(name));
    std::vector<ParkedEvent> out;
    for (int i = 1; i < r.rows(); ++i) {
      ParkedEvent& e = out.emplace_back();
      e.key = static_cast<std::uint64_t>(read_int8(r.raw(i, 0)));
      e.position = Position(static_cast<std::uint64_t>(read_int8(r.raw(i, 1))));
      e.stream.assign(r.get(i, 2));
      e.version = StreamVersion(static_cast<std::uint64_t>(read_int8(r.raw(i, 3))));
      e.event_id = read_uuid(r.raw(i, 4));
      e.type.assign(r.get(i, 5));
      e.attempts = static_cast<std::uint32_t>(read_int4(r.raw(i, 6)));
      e.error.assign(r.get(i, 7));
      e.parked_at = read_timestamptz(r.raw(i, 8));
      e.replay_requested = r.raw(i, 9)[0] != 0;
    }
    return out;
  }

  std::uint64_t request_replay(std::string_view name) override {
    validate_subscription_name(name);
    refuse_if_read_only(name, "written");
    Params p;
    p.text(std::string(name)).binary(int8_bytes(pg_micros(now())), kTimestamptzOid);
    Result r = write(
        "WITH s AS (UPDATE {schema}.subscriptions SET updated_at = $2 WHERE name = $1 RETURNING id), "
        "r AS (UPDATE {schema}.subscription_parked p SET replay_requested = true FROM s "
        "  WHERE p.subscription_id = s.id RETURNING 1) "
        "SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM r)",
        p, fmt::format("requesting the replay of subscription '{}'", name));
    if (r.int8(0, 0) == 0) throw SubscriptionNotFound(std::string(name));
    return static_cast<std::uint64_t>(r.int8(0, 1));
  }

  std::unique_ptr<SubscriptionLease> acquire(std::string_view name, bool wait, std::chrono::milliseconds timeout,
                                             std::stop_token stop) override {
    validate_subscription_name(name);
    refuse_if_read_only(name, "consumed");
    auto key = lock_key(name);
    if (!key) throw SubscriptionNotFound(std::string(name));
    auto conn = std::make_unique<Connection>(host_.pool->target());
    {
      // What holder() shows other processes (pg_stat_activity.application_name, at most 63 bytes).
      Params p;
      p.text(("sourced " + this_process_holder()).substr(0, 63));
      conn->query("SELECT set_config('application_name', $1, false)", p, Format::text, "naming a lease's session");
    }
    bool first_try = true;
    bool taken = poll_until(
        [&] {
          // Looked up at every try but the first: a subscription deleted and created again meanwhile has a
          // new id.
          if (!first_try) key = lock_key(name);
          first_try = false;
          if (!key) throw SubscriptionNotFound(std::string(name));
          Params p;
          p.text(key->key1()).text(key->key2());
          Result r = conn->query("SELECT pg_try_advisory_lock($1::int4, $2::int4)", p, Format::text,
                                 fmt::format("taking the lease of subscription '{}'", name));
          return r.boolean(0, 0);
        },
        wait, timeout, stop);
    if (!taken)
      throw SubscriptionLocked(std::string(name), describe_holder(*key).value_or("a consumer that just left"));
    auto lease = std::make_unique<AdvisoryLease>(std::move(conn), *key);
    // Deleted while we waited: the lock is of a subscription that no longer exists.
    if (lock_key(name).value_or(LockKey{0, 0}).id != key->id) throw SubscriptionNotFound(std::string(name));
    return lease;
  }

  std::optional<std::string> holder(std::string_view name) override {
    validate_subscription_name(name);
    auto key = lock_key(name);
    if (!key) return std::nullopt;
    return describe_holder(*key);
  }

 private:
  bool has_tables() const { return host_.schema_version >= kRegistrySchemaVersion; }

  void refuse_if_read_only(std::string_view name, std::string_view what) const {
    if (host_.read_only) {
      throw InvalidArgument(
          fmt::format("the PostgreSQL store (schema {}) was opened read-only: subscription '{}' "
                      "cannot be {}",
                      host_.schema, name, what));
    }
  }

  // Reads are idempotent: one retry on a fresh connection hides a connection the server closed.
  Result read(const std::string& sql, Params& p, Format format, std::string_view what) {
    std::string text = with_schema(sql, host_.schema);
    for (int attempt = 0;; ++attempt) {
      try {
        auto c = host_.pool->acquire();
        return c->query(text, p, format, what);
      } catch (const ConnectionError&) {
        if (attempt > 0) throw;
      }
    }
  }
  // One statement in its own transaction; not retried (a write whose commit was lost may have happened).
  Result write(const std::string& sql, Params& p, std::string_view what) {
    auto c = host_.pool->acquire();
    return c->query(with_schema(sql, host_.schema), p, Format::text, what);
  }

  std::optional<LockKey> lock_key(std::string_view name) {
    if (!has_tables()) return std::nullopt;
    Params p;
    p.text(std::string(name)).text(host_.schema);
    Result r = read(
        "SELECT s.id, (SELECT oid FROM pg_namespace WHERE nspname = $2) FROM {schema}.subscriptions s "
        "WHERE s.name = $1",
        p, Format::text, fmt::format("reading subscription '{}'", name));
    if (r.rows() == 0) return std::nullopt;
    return LockKey{static_cast<std::uint32_t>(r.int8(0, 1)), static_cast<std::int32_t>(r.int8(0, 0))};
  }

  std::optional<std::string> describe_holder(const LockKey& key) {
    Params p;
    p.text(std::to_string(key.schema_oid)).text(key.key2());
    Result r = read(
        "SELECT l.pid, coalesce(host(a.client_addr), 'local'), coalesce(a.application_name, '') "
        "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $1::oid "
        "AND l.objid = $2::int8::oid "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
        p, Format::text, "finding a lease's holder");
    if (r.rows() == 0) return std::nullopt;
    std::string backend(r.get(0, 0)), client(r.get(0, 1)), app(r.get(0, 2));
    static constexpr std::string_view kOurs = "sourced pid ";
    if (app.starts_with(kOurs)) {
      return fmt::format("{} (server backend {}, client {})", app.substr(8), backend, client);
    }
    return fmt::format("server backend {} (client {}, application '{}')", backend, client, app);
  }

  RegistryHost host_;
};

}  // namespace

std::unique_ptr<SubscriptionRegistry> make_registry(RegistryHost host) {
  return std::make_unique<PgRegistry>(std::move(host));
}

}  // namespace sourced::detail::pg
