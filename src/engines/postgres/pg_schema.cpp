#include "engines/postgres/pg_schema.hpp"

#include <fmt/format.h>

namespace sourced::detail::pg {
namespace {

// Migration 1: the tables and the append function.
//
// `head` holds the last position handed out. Every append transaction locks its one row first and keeps
// the lock until it commits, so positions are assigned in commit order and a reader can never see
// position p+1 committed before p (docs/postgres.md explains why and what it costs).
//
// `append_group` appends a whole group of appends (the group commit of one process) in one call, so a
// group costs one round trip and one commit. For each append it checks the stream and the expected
// version; when they hold and none of the caller's ids is stored yet, it writes. Otherwise it writes
// nothing for that append and returns the facts (the stream's state, where the caller's ids are
// stored), and the client's shared rules (src/store/append_rules.cpp) decide between a repeat and an
// error, so every engine reports the same outcome. Its rows: one per append (o_found_id null), preceded
// by one per caller-given id that is already stored.
constexpr const char* kV1 = R"sql(
CREATE TABLE {schema}.head (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  position  bigint  NOT NULL
) WITH (fillfactor = 10);
INSERT INTO {schema}.head (singleton, position) VALUES (true, 0);

CREATE TABLE {schema}.streams (
  id             bigserial   PRIMARY KEY,
  name           text        COLLATE "C" NOT NULL UNIQUE,
  last_version   bigint      NOT NULL DEFAULT 0,
  hidden_through bigint      NOT NULL DEFAULT 0,
  tombstoned     boolean     NOT NULL DEFAULT false,
  created_at     timestamptz NOT NULL,
  updated_at     timestamptz NOT NULL
);

CREATE TABLE {schema}.events (
  position       bigint      PRIMARY KEY,
  stream_id      bigint      NOT NULL REFERENCES {schema}.streams (id),
  version        bigint      NOT NULL,
  id             uuid        NOT NULL UNIQUE,
  type           text        NOT NULL,
  data           bytea       NOT NULL,
  metadata       bytea       NOT NULL,
  correlation_id uuid,
  causation_id   uuid,
  created_at     timestamptz NOT NULL,
  UNIQUE (stream_id, version)
);

CREATE FUNCTION {schema}.append_group(
    p_stream text[], p_kind int[], p_expected bigint[], p_start int[], p_count int[], p_lookup boolean[],
    p_req int[], p_id uuid[], p_given boolean[], p_type text[], p_data bytea[], p_metadata bytea[],
    p_correlation uuid[], p_causation uuid[])
  RETURNS TABLE (o_req int, o_written boolean, o_exists boolean, o_last bigint, o_hidden bigint,
                 o_tombstoned boolean, o_first_position bigint, o_found_id uuid, o_found_stream text,
                 o_found_version bigint, o_found_position bigint)
  LANGUAGE plpgsql AS $fn$
DECLARE
  n           int := coalesce(array_length(p_stream, 1), 0);
  v_head      bigint;
  v_pos       bigint;
  v_ts        timestamptz;
  v_sid       bigint[] := array_fill(0::bigint, ARRAY[n]);
  v_first_pos bigint[] := array_fill(0::bigint, ARRAY[n]);
  v_first_ver bigint[] := array_fill(0::bigint, ARRAY[n]);
  v_id        bigint;
  v_last      bigint;
  v_hidden    bigint;
  v_tomb      boolean;
  v_found     boolean;
  v_lo        int;
  v_hi        int;
BEGIN
  -- Taken first and held until commit: positions are handed out in commit order. Every writer of
  -- streams and events takes it first, so the stream rows read below cannot change under us: they need
  -- no row locks of their own (which would cost a WAL record each).
  SELECT h.position INTO v_head FROM {schema}.head h FOR UPDATE;
  v_pos := v_head;
  v_ts := clock_timestamp();
  FOR r IN 1..n LOOP
    SELECT st.id, st.last_version, st.hidden_through, st.tombstoned INTO v_id, v_last, v_hidden, v_tomb
      FROM {schema}.streams st WHERE st.name = p_stream[r];
    o_exists := FOUND;
    IF NOT o_exists THEN
      v_id := 0; v_last := 0; v_hidden := 0; v_tomb := false;
    END IF;
    o_req := r; o_last := v_last; o_hidden := v_hidden; o_tombstoned := v_tomb; o_first_position := 0;
    v_found := false;
    IF p_lookup[r] AND NOT v_tomb THEN
      v_lo := p_start[r];
      v_hi := p_start[r] + p_count[r] - 1;
      o_written := false;
      FOR o_found_id, o_found_stream, o_found_version, o_found_position IN
        SELECT e.id, st.name, e.version, e.position
          FROM unnest(p_id[v_lo:v_hi], p_given[v_lo:v_hi]) AS u(id, given)
          JOIN {schema}.events e ON e.id = u.id
          JOIN {schema}.streams st ON st.id = e.stream_id
         WHERE u.given
      LOOP
        v_found := true;
        RETURN NEXT;
      END LOOP;
      o_found_id := NULL; o_found_stream := NULL; o_found_version := NULL; o_found_position := NULL;
    END IF;
    o_written := NOT v_tomb AND NOT v_found AND CASE p_kind[r]
      WHEN 0 THEN true                    -- any
      WHEN 1 THEN v_last <= v_hidden      -- no_stream: no visible events
      WHEN 2 THEN v_last > v_hidden       -- stream_exists
      ELSE v_last = p_expected[r]         -- exact
    END;
    IF o_written AND p_count[r] > 0 THEN
      IF NOT o_exists THEN
        INSERT INTO {schema}.streams (name, last_version, hidden_through, tombstoned, created_at, updated_at)
          VALUES (p_stream[r], p_count[r], 0, false, v_ts, v_ts) RETURNING id INTO v_id;
      ELSE
        UPDATE {schema}.streams SET last_version = v_last + p_count[r], updated_at = v_ts WHERE id = v_id;
      END IF;
      v_sid[r] := v_id;
      v_first_pos[r] := v_pos + 1;
      v_first_ver[r] := v_last + 1;
      o_first_position := v_pos + 1;
      v_pos := v_pos + p_count[r];
    END IF;
    RETURN NEXT;
  END LOOP;
  IF v_pos > v_head THEN
    -- All written events in one statement, in position order.
    INSERT INTO {schema}.events (position, stream_id, version, id, type, data, metadata, correlation_id,
                                 causation_id, created_at)
    SELECT v_first_pos[u.req] + (u.ord - p_start[u.req]), v_sid[u.req],
           v_first_ver[u.req] + (u.ord - p_start[u.req]), u.id, u.type, u.data, u.metadata, u.correlation,
           u.causation, v_ts
      FROM unnest(p_req, p_id, p_type, p_data, p_metadata, p_correlation, p_causation)
           WITH ORDINALITY AS u(req, id, type, data, metadata, correlation, causation, ord)
     WHERE v_first_pos[u.req] > 0;
    UPDATE {schema}.head SET position = v_pos;
  END IF;
END
$fn$;
)sql";

// Migration 2: every commit that moves the head notifies the channel `sourced_<schema>` (cut to 63 bytes,
// PostgreSQL's limit), so other processes' waiters wake at once (LISTEN in postgres_store.cpp). The
// notification is sent when the transaction commits, and only then; it is a hint: waiters still read
// the head and still poll.
constexpr const char* kV2 = R"sql(
CREATE FUNCTION {schema}.notify_commit() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify(left('sourced_' || TG_TABLE_SCHEMA, 63), '');
  RETURN NULL;
END
$fn$;
CREATE TRIGGER notify_commit AFTER UPDATE ON {schema}.head
  FOR EACH STATEMENT EXECUTE FUNCTION {schema}.notify_commit();
)sql";

// Migration 3: each event's ContentType (0 unknown, 1 json, 2 binary; events stored before read as
// unknown), and append_group re-created with the content types as one more array. A column with a
// constant default rewrites no row. Dropping and creating the function in the migration's transaction
// means no client ever calls a function that is missing or has the other signature: an old client's
// 14-argument call fails cleanly after it (upgrade every client of a schema together).
constexpr const char* kV3 = R"sql(
ALTER TABLE {schema}.events ADD COLUMN content_type smallint NOT NULL DEFAULT 0;
DROP FUNCTION {schema}.append_group(text[], int[], bigint[], int[], int[], boolean[], int[], uuid[], boolean[],
                                    text[], bytea[], bytea[], uuid[], uuid[]);
CREATE FUNCTION {schema}.append_group(
    p_stream text[], p_kind int[], p_expected bigint[], p_start int[], p_count int[], p_lookup boolean[],
    p_req int[], p_id uuid[], p_given boolean[], p_type text[], p_data bytea[], p_metadata bytea[],
    p_correlation uuid[], p_causation uuid[], p_content_type int[])
  RETURNS TABLE (o_req int, o_written boolean, o_exists boolean, o_last bigint, o_hidden bigint,
                 o_tombstoned boolean, o_first_position bigint, o_found_id uuid, o_found_stream text,
                 o_found_version bigint, o_found_position bigint)
  LANGUAGE plpgsql AS $fn$
DECLARE
  n           int := coalesce(array_length(p_stream, 1), 0);
  v_head      bigint;
  v_pos       bigint;
  v_ts        timestamptz;
  v_sid       bigint[] := array_fill(0::bigint, ARRAY[n]);
  v_first_pos bigint[] := array_fill(0::bigint, ARRAY[n]);
  v_first_ver bigint[] := array_fill(0::bigint, ARRAY[n]);
  v_id        bigint;
  v_last      bigint;
  v_hidden    bigint;
  v_tomb      boolean;
  v_found     boolean;
  v_lo        int;
  v_hi        int;
BEGIN
  -- Taken first and held until commit: positions are handed out in commit order. Every writer of
  -- streams and events takes it first, so the stream rows read below cannot change under us: they need
  -- no row locks of their own (which would cost a WAL record each).
  SELECT h.position INTO v_head FROM {schema}.head h FOR UPDATE;
  v_pos := v_head;
  v_ts := clock_timestamp();
  FOR r IN 1..n LOOP
    SELECT st.id, st.last_version, st.hidden_through, st.tombstoned INTO v_id, v_last, v_hidden, v_tomb
      FROM {schema}.streams st WHERE st.name = p_stream[r];
    o_exists := FOUND;
    IF NOT o_exists THEN
      v_id := 0; v_last := 0; v_hidden := 0; v_tomb := false;
    END IF;
    o_req := r; o_last := v_last; o_hidden := v_hidden; o_tombstoned := v_tomb; o_first_position := 0;
    v_found := false;
    IF p_lookup[r] AND NOT v_tomb THEN
      v_lo := p_start[r];
      v_hi := p_start[r] + p_count[r] - 1;
      o_written := false;
      FOR o_found_id, o_found_stream, o_found_version, o_found_position IN
        SELECT e.id, st.name, e.version, e.position
          FROM unnest(p_id[v_lo:v_hi], p_given[v_lo:v_hi]) AS u(id, given)
          JOIN {schema}.events e ON e.id = u.id
          JOIN {schema}.streams st ON st.id = e.stream_id
         WHERE u.given
      LOOP
        v_found := true;
        RETURN NEXT;
      END LOOP;
      o_found_id := NULL; o_found_stream := NULL; o_found_version := NULL; o_found_position := NULL;
    END IF;
    o_written := NOT v_tomb AND NOT v_found AND CASE p_kind[r]
      WHEN 0 THEN true                    -- any
      WHEN 1 THEN v_last <= v_hidden      -- no_stream: no visible events
      WHEN 2 THEN v_last > v_hidden       -- stream_exists
      ELSE v_last = p_expected[r]         -- exact
    END;
    IF o_written AND p_count[r] > 0 THEN
      IF NOT o_exists THEN
        INSERT INTO {schema}.streams (name, last_version, hidden_through, tombstoned, created_at, updated_at)
          VALUES (p_stream[r], p_count[r], 0, false, v_ts, v_ts) RETURNING id INTO v_id;
      ELSE
        UPDATE {schema}.streams SET last_version = v_last + p_count[r], updated_at = v_ts WHERE id = v_id;
      END IF;
      v_sid[r] := v_id;
      v_first_pos[r] := v_pos + 1;
      v_first_ver[r] := v_last + 1;
      o_first_position := v_pos + 1;
      v_pos := v_pos + p_count[r];
    END IF;
    RETURN NEXT;
  END LOOP;
  IF v_pos > v_head THEN
    -- All written events in one statement, in position order.
    INSERT INTO {schema}.events (position, stream_id, version, id, type, data, metadata, correlation_id,
                                 causation_id, created_at, content_type)
    SELECT v_first_pos[u.req] + (u.ord - p_start[u.req]), v_sid[u.req],
           v_first_ver[u.req] + (u.ord - p_start[u.req]), u.id, u.type, u.data, u.metadata, u.correlation,
           u.causation, v_ts, u.content_type
      FROM unnest(p_req, p_id, p_type, p_data, p_metadata, p_correlation, p_causation, p_content_type)
           WITH ORDINALITY AS u(req, id, type, data, metadata, correlation, causation, content_type, ord)
     WHERE v_first_pos[u.req] > 0;
    UPDATE {schema}.head SET position = v_pos;
  END IF;
END
$fn$;
)sql";

// Migration 4: persistent subscriptions (engines/postgres/pg_registry.cpp). A subscription's id is the
// second key of its lease's advisory lock (the first is the schema's OID), so it is an int4 identity,
// never reused. Timestamps are the client's clock, as on every engine.
constexpr const char* kV4 = R"sql(
CREATE TABLE {schema}.subscriptions (
  id            integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name          text        COLLATE "C" NOT NULL UNIQUE,
  stream        text        NOT NULL DEFAULT '',
  filter        jsonb,
  start_after   bigint      NOT NULL,
  max_in_flight integer     NOT NULL,
  max_attempts  integer     NOT NULL,
  checkpoint    bigint      NOT NULL,
  in_flight     bigint      NOT NULL DEFAULT 0,
  last_error    text        NOT NULL DEFAULT '',
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL
);
CREATE TABLE {schema}.subscription_parked (
  subscription_id  integer     NOT NULL REFERENCES {schema}.subscriptions (id) ON DELETE CASCADE,
  key              bigint      NOT NULL,
  position         bigint      NOT NULL,
  stream           text        NOT NULL,
  version          bigint      NOT NULL,
  event_id         uuid        NOT NULL,
  type             text        NOT NULL,
  attempts         integer     NOT NULL,
  error            text        NOT NULL,
  parked_at        timestamptz NOT NULL,
  replay_requested boolean     NOT NULL DEFAULT false,
  PRIMARY KEY (subscription_id, key)
);
)sql";

}  // namespace

std::string commit_channel(const std::string& schema) { return ("sourced_" + schema).substr(0, 63); }

std::string with_schema(std::string sql, const std::string& schema) {
  static constexpr std::string_view kToken = "{schema}";
  std::string quoted = quote_ident(schema);
  for (auto at = sql.find(kToken); at != std::string::npos; at = sql.find(kToken, at + quoted.size())) {
    sql.replace(at, kToken.size(), quoted);
  }
  return sql;
}

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> all = {
      {1, "streams, events, head and append_group", kV1},
      {2, "commits notify sourced_<schema>", kV2},
      {3, "events.content_type, append_group with content types", kV3},
      {4, "subscriptions and subscription_parked", kV4},
  };
  return all;
}

int latest_schema_version() { return migrations().back().version; }

namespace {

int current_version(Connection& c, const std::string& schema) {
  Params p;
  p.text(quote_ident(schema) + ".migrations");
  Result exists = c.query("SELECT to_regclass($1) IS NOT NULL", p, Format::text, "checking the schema version");
  if (!exists.boolean(0, 0)) return 0;
  Params none;
  Result v = c.query(with_schema("SELECT coalesce(max(version), 0) FROM {schema}.migrations", schema), none,
                     Format::text, "checking the schema version");
  return static_cast<int>(v.int8(0, 0));
}

}  // namespace

int migrate(Connection& c, const Target& target, const std::string& schema, bool create_if_missing, bool read_only) {
  int latest = latest_schema_version();
  int version = current_version(c, schema);
  auto newer = [&](int v) {
    return StorageError(
        fmt::format("the sourced schema '{}' at {} has version {}, newer than this library's {}; "
                    "upgrade sourced",
                    schema, target.display, v, latest));
  };
  if (version > latest) throw newer(version);
  if (version == latest) return version;
  if (version == 0 && (read_only || !create_if_missing)) {
    throw StoreNotFound(fmt::format("{} (schema {})", target.display, schema));
  }
  // An older schema is read as it is (the store reads what its version holds), never changed.
  if (read_only) return version;
  try {
    c.exec("BEGIN", "migrating the schema");
    Params key;
    key.text("sourced.migrate." + schema);
    // Two processes opening a new store at once: the second waits here, then finds the work done.
    c.query("SELECT pg_advisory_xact_lock(hashtext($1))", key, Format::text, "migrating the schema");
    c.exec(with_schema("CREATE SCHEMA IF NOT EXISTS {schema};"
                       "CREATE TABLE IF NOT EXISTS {schema}.migrations ("
                       "  version     int PRIMARY KEY,"
                       "  description text NOT NULL,"
                       "  applied_at  timestamptz NOT NULL DEFAULT now())",
                       schema)
               .c_str(),
           "creating the schema");
    version = current_version(c, schema);
    if (version > latest) throw newer(version);
    for (const Migration& m : migrations()) {
      if (m.version <= version) continue;
      c.exec(with_schema(m.sql, schema).c_str(), fmt::format("applying migration {} ({})", m.version, m.description));
      Params p;
      p.text(std::to_string(m.version)).text(m.description);
      c.query(with_schema("INSERT INTO {schema}.migrations (version, description) VALUES ($1, $2)", schema), p,
              Format::text, "recording a migration");
    }
    c.exec("COMMIT", "committing the schema migration");
    return latest;
  } catch (const ServerError& e) {
    if (c.ok()) PQclear(PQexec(c.handle(), "ROLLBACK"));
    if (e.sqlstate() == "42501") {  // insufficient_privilege
      throw StorageError(fmt::format(
          "PostgreSQL user '{}' may not create the sourced schema '{}' in database '{}' at {} (permission denied); "
          "run `sourced init` once as a user who may, or grant CREATE on the database",
          target.user.empty() ? "(default)" : target.user, schema, target.database, target.display));
    }
    throw;
  } catch (...) {
    if (c.ok()) PQclear(PQexec(c.handle(), "ROLLBACK"));
    throw;
  }
}

}  // namespace sourced::detail::pg
