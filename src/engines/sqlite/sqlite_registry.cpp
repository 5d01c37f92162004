#include "engines/sqlite/sqlite_registry.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include "store/subscription_rules.hpp"

namespace sourced::detail::sqlite {

// Keys, checkpoints and counts are unsigned 64-bit in the API and signed in SQLite; the shared rules keep
// them below 2^63, so the casts below are exact.
const char* const kRegistrySchema = R"sql(
-- One row per persistent subscription. AUTOINCREMENT: an id is never reused, because it names the
-- subscription's lock byte in the lease file (a consumer of a deleted subscription must not hold a new
-- one of the same name).
CREATE TABLE IF NOT EXISTS subscriptions (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  name          TEXT    NOT NULL UNIQUE,
  stream        TEXT    NOT NULL DEFAULT '',  -- '' reads $all
  filter        TEXT,                         -- JSON {category, stream_prefix, event_types}; NULL: none
  start_after   INTEGER NOT NULL,
  max_in_flight INTEGER NOT NULL,
  max_attempts  INTEGER NOT NULL,
  checkpoint    INTEGER NOT NULL,
  in_flight     INTEGER NOT NULL DEFAULT 0,
  last_error    TEXT    NOT NULL DEFAULT '',
  holder        TEXT,                         -- who took the lease last ("pid 4242 on host db1")
  created_at    INTEGER NOT NULL,             -- microseconds since the Unix epoch, UTC
  updated_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS subscription_parked (
  subscription_id  INTEGER NOT NULL,  -- subscriptions.id
  key              INTEGER NOT NULL,  -- the subscription's key of the event (position, or stream version)
  position         INTEGER NOT NULL,
  stream           TEXT    NOT NULL,
  version          INTEGER NOT NULL,
  event_id         BLOB    NOT NULL,  -- 16 bytes
  type             TEXT    NOT NULL,
  attempts         INTEGER NOT NULL,
  error            TEXT    NOT NULL,
  parked_at        INTEGER NOT NULL,
  replay_requested INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (subscription_id, key)
) WITHOUT ROWID;
)sql";

namespace {

std::int64_t to_micros(Timestamp t) { return t.time_since_epoch().count(); }
Timestamp from_micros(std::int64_t v) { return Timestamp(std::chrono::microseconds(v)); }
std::int64_t i64(std::uint64_t v) { return static_cast<std::int64_t>(v); }
std::uint64_t u64(std::int64_t v) { return static_cast<std::uint64_t>(v); }

constexpr const char* kSelectInfo =
    "SELECT s.name, s.stream, s.filter, s.start_after, s.max_in_flight, s.max_attempts, s.checkpoint, "
    "(SELECT count(*) FROM subscription_parked p WHERE p.subscription_id = s.id), s.in_flight, s.last_error, "
    "s.created_at, s.updated_at, s.id FROM subscriptions s ";

PersistentSubscriptionInfo read_info(const Statement& st) {
  PersistentSubscriptionInfo info;
  info.config.name.assign(st.text(0));
  info.config.stream.assign(st.text(1));
  if (!st.is_null(2)) info.config.filter = filter_from_json(st.text(2));
  info.config.start_after = u64(st.int64(3));
  info.config.max_in_flight = static_cast<std::uint32_t>(st.int64(4));
  info.config.max_attempts = static_cast<std::uint32_t>(st.int64(5));
  info.checkpoint = u64(st.int64(6));
  info.parked = u64(st.int64(7));
  info.in_flight = u64(st.int64(8));
  info.last_error.assign(st.text(9));
  info.created_at = from_micros(st.int64(10));
  info.updated_at = from_micros(st.int64(11));
  info.id = u64(st.int64(12));
  return info;
}

std::optional<std::int64_t> find_id(Connection& c, std::string_view name) {
  ScopedStatement st = c.prepare("SELECT id FROM subscriptions WHERE name = ?1");
  st->bind_text(1, name);
  if (!st->step()) return std::nullopt;
  return st->int64(0);
}

// A file descriptor closed by its guard.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

struct flock lock_byte(std::int64_t id, short type) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = id;
  fl.l_len = 1;
  return fl;
}

// The lease: an OFD lock on the subscription's byte of the lease file, held by this open file description.
// OFD locks (unlike classic POSIX record locks) belong to the open file description, so two leases in one
// process exclude each other, and closing one does not drop the other; the kernel drops them all when
// the process dies. The descriptor is close-on-exec, so a child process (`--exec CMD`) cannot keep it.
class FileLease final : public SubscriptionLease {
 public:
  FileLease(int fd, std::int64_t id) : SubscriptionLease(u64(id)), fd_(fd) {}

 private:
  Fd fd_;
};

// Beside the database's real path, so every process opening the store through any name (a symlink, a
// relative path) locks the same file.
std::string lease_file(const std::string& path) {
  std::error_code ec;
  auto real = std::filesystem::canonical(path, ec);
  return (ec ? path : real.string()) + "-leases";
}

StorageError lease_file_error(std::string_view what, const std::string& path) {
  return StorageError(fmt::format("cannot {} the subscription lease file '{}': {}", what, path, std::strerror(errno)));
}

// The lease file opened to see which leases are held (by any process, this one included).
class LeaseFile {
 public:
  explicit LeaseFile(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_.get() < 0 && errno != ENOENT) throw lease_file_error("open", path_);
  }
  bool locked(std::uint64_t id) const {
    if (fd_.get() < 0) return false;  // no lease was ever taken
    struct flock fl = lock_byte(static_cast<std::int64_t>(id), F_WRLCK);
    if (::fcntl(fd_.get(), F_OFD_GETLK, &fl) != 0) throw lease_file_error("inspect", path_);
    return fl.l_type != F_UNLCK;
  }

 private:
  const std::string& path_;
  Fd fd_;
};

class SqliteRegistry final : public SubscriptionRegistry {
 public:
  explicit SqliteRegistry(RegistryHost host) : host_(std::move(host)), lock_path_(lease_file(host_.path)) {}

  void create(const PersistentSubscriptionConfig& config) override {
    validate_subscription_config(config);
    refuse_if_read_only(config.name, "created");
    auto filter = filter_to_json(config.filter);
    host_.write([&](Connection& c, bool& writing) {
      if (find_id(c, config.name)) throw SubscriptionExists(config.name);
      writing = true;
      ScopedStatement st = c.prepare(
          "INSERT INTO subscriptions (name, stream, filter, start_after, max_in_flight, max_attempts, checkpoint, "
          "created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4, ?7, ?7)");
      st->bind_text(1, config.name).bind_text(2, config.stream);
      if (filter) st->bind_text(3, *filter);
      st->bind(4, i64(config.start_after)).bind(5, config.max_in_flight).bind(6, config.max_attempts);
      st->bind(7, to_micros(now()));
      st->run();
    });
  }

  bool remove(std::string_view name) override {
    validate_subscription_name(name);
    refuse_if_read_only(name, "deleted");
    bool removed = false;
    host_.write([&](Connection& c, bool& writing) {
      removed = false;
      auto id = find_id(c, name);
      if (!id) return;
      writing = true;
      {
        ScopedStatement st = c.prepare("DELETE FROM subscription_parked WHERE subscription_id = ?1");
        st->bind(1, *id).run();
      }
      ScopedStatement st = c.prepare("DELETE FROM subscriptions WHERE id = ?1");
      st->bind(1, *id).run();
      removed = true;
    });
    return removed;
  }

  void update_limits(std::string_view name, std::uint32_t max_in_flight, std::uint32_t max_attempts) override {
    validate_subscription_config(
        {.name = std::string(name), .max_in_flight = max_in_flight, .max_attempts = max_attempts});
    refuse_if_read_only(name, "updated");
    write_subscription(name, 0, [&](Connection& c, std::int64_t id) {
      ScopedStatement st =
          c.prepare("UPDATE subscriptions SET max_in_flight = ?2, max_attempts = ?3, updated_at = ?4 WHERE id = ?1");
      st->bind(1, id).bind(2, max_in_flight).bind(3, max_attempts).bind(4, to_micros(now()));
      st->run();
    });
  }

  std::optional<PersistentSubscriptionInfo> get(std::string_view name) override {
    validate_subscription_name(name);
    if (!has_tables()) return std::nullopt;
    auto c = host_.readers->acquire();
    // One statement: the row and its parked count come from one snapshot.
    ScopedStatement st = c->prepare(std::string(kSelectInfo) + "WHERE s.name = ?1");
    st->bind_text(1, name);
    if (!st->step()) return std::nullopt;
    auto info = read_info(*st);
    LeaseFile leases(lock_path_);
    if (!leases.locked(info.id)) info.in_flight = 0;
    return info;
  }

  std::vector<PersistentSubscriptionInfo> list() override {
    std::vector<PersistentSubscriptionInfo> out;
    if (!has_tables()) return out;
    auto c = host_.readers->acquire();
    ScopedStatement st = c->prepare(std::string(kSelectInfo) + "ORDER BY s.name");
    LeaseFile leases(lock_path_);
    while (st->step()) {
      out.push_back(read_info(*st));
      if (!leases.locked(out.back().id)) out.back().in_flight = 0;
    }
    return out;
  }

  void save_progress(std::string_view name, const SubscriptionProgress& progress) override {
    validate_subscription_name(name);
    validate_progress(progress);
    refuse_if_read_only(name, "written");
    Timestamp ts = now();
    write_subscription(name, progress.subscription_id, [&](Connection& c, std::int64_t id) {
      {
        ScopedStatement st = c.prepare("DELETE FROM subscription_parked WHERE subscription_id = ?1 AND key = ?2");
        for (auto key : progress.unparked) {
          st->reset();
          st->bind(1, id).bind(2, i64(key)).run();
        }
      }
      {
        ScopedStatement st = c.prepare(
            "INSERT OR REPLACE INTO subscription_parked (subscription_id, key, position, stream, version, event_id, "
            "type, attempts, error, parked_at, replay_requested) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0)");
        for (const auto& reported : progress.newly_parked) {
          ParkedEvent p = parked_as_stored(reported, ts);
          st->reset();
          st->bind(1, id).bind(2, i64(p.key)).bind(3, i64(p.position.value())).bind_text(4, p.stream);
          st->bind(5, i64(p.version.value())).bind_blob(6, p.event_id.bytes().data(), 16).bind_text(7, p.type);
          st->bind(8, p.attempts).bind_text(9, p.error).bind(10, to_micros(p.parked_at));
          st->run();
        }
      }
      ScopedStatement st = c.prepare(
          "UPDATE subscriptions SET checkpoint = max(checkpoint, ?2), in_flight = ?3, "
          "last_error = coalesce(?4, last_error), updated_at = ?5 WHERE id = ?1");
      st->bind(1, id).bind(2, i64(progress.checkpoint)).bind(3, i64(progress.in_flight));
      if (progress.last_error) st->bind_text(4, *progress.last_error);
      st->bind(5, to_micros(ts));
      st->run();
    });
  }

  std::vector<ParkedEvent> parked(std::string_view name, std::uint64_t after_key, std::size_t limit) override {
    validate_subscription_name(name);
    if (!has_tables()) throw SubscriptionNotFound(std::string(name));
    auto c = host_.readers->acquire();
    c->exec("BEGIN");  // the subscription and its parked events from one snapshot
    struct EndRead {
      Connection& c;
      ~EndRead() { sqlite3_exec(c.handle(), "COMMIT", nullptr, nullptr, nullptr); }
    } end_read{*c};
    auto id = find_id(*c, name);
    if (!id) throw SubscriptionNotFound(std::string(name));
    ScopedStatement st = c->prepare(
        "SELECT key, position, stream, version, event_id, type, attempts, error, parked_at, replay_requested "
        "FROM subscription_parked WHERE subscription_id = ?1 AND key > ?2 ORDER BY key LIMIT ?3");
    st->bind(1, *id).bind(2, i64(std::min<std::uint64_t>(after_key, INT64_MAX)));
    st->bind(3, i64(std::min<std::uint64_t>(limit, INT64_MAX)));
    std::vector<ParkedEvent> out;
    while (st->step()) {
      ParkedEvent& p = out.emplace_back();
      p.key = u64(st->int64(0));
      p.position = Position(u64(st->int64(1)));
      p.stream.assign(st->text(2));
      p.version = StreamVersion(u64(st->int64(3)));
      auto b = st->blob(4);
      Uuid::Bytes bytes{};
      std::memcpy(bytes.data(), b.data(), std::min(b.size(), bytes.size()));
      p.event_id = Uuid(bytes);
      p.type.assign(st->text(5));
      p.attempts = static_cast<std::uint32_t>(st->int64(6));
      p.error.assign(st->text(7));
      p.parked_at = from_micros(st->int64(8));
      p.replay_requested = st->int64(9) != 0;
    }
    return out;
  }

  std::uint64_t request_replay(std::string_view name) override {
    validate_subscription_name(name);
    refuse_if_read_only(name, "written");
    std::uint64_t count = 0;
    write_subscription(name, 0, [&](Connection& c, std::int64_t id) {
      {
        ScopedStatement st =
            c.prepare("UPDATE subscription_parked SET replay_requested = 1 WHERE subscription_id = ?1");
        st->bind(1, id).run();
      }
      {
        ScopedStatement st = c.prepare("SELECT count(*) FROM subscription_parked WHERE subscription_id = ?1");
        st->bind(1, id).step();
        count = u64(st->int64(0));
      }
      ScopedStatement st = c.prepare("UPDATE subscriptions SET updated_at = ?2 WHERE id = ?1");
      st->bind(1, id).bind(2, to_micros(now())).run();
    });
    return count;
  }

  std::unique_ptr<SubscriptionLease> acquire(std::string_view name, bool wait, std::chrono::milliseconds timeout,
                                             std::stop_token stop) override {
    validate_subscription_name(name);
    refuse_if_read_only(name, "consumed");
    auto id = read_id(name);
    if (!id) throw SubscriptionNotFound(std::string(name));
    Fd fd(::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666));
    if (fd.get() < 0) throw io_error("open");
    bool taken = poll_until(
        [&] {
          // Looked up at every try: a subscription deleted and created again meanwhile has a new id.
          id = read_id(name);
          if (!id) throw SubscriptionNotFound(std::string(name));
          struct flock fl = lock_byte(*id, F_WRLCK);
          if (::fcntl(fd.get(), F_OFD_SETLK, &fl) == 0) return true;
          if (errno == EAGAIN || errno == EACCES || errno == EINTR) return false;
          throw io_error("lock");
        },
        wait, timeout, stop);
    if (!taken) throw SubscriptionLocked(std::string(name), describe_holder(*id).value_or("a consumer that just left"));
    auto lease = std::make_unique<FileLease>(fd.release(), *id);
    // Who holds it, for holder() in any process. Written after the lock is taken: for a moment after a
    // takeover, holder() may still name the previous holder.
    std::string me = this_process_holder();
    host_.write([&](Connection& c, bool& writing) {
      writing = true;
      ScopedStatement st = c.prepare("UPDATE subscriptions SET holder = ?2 WHERE id = ?1");
      st->bind(1, *id).bind_text(2, me).run();
      if (sqlite3_changes(c.handle()) == 0) throw SubscriptionNotFound(std::string(name));  // deleted meanwhile
    });
    return lease;
  }

  std::optional<std::string> holder(std::string_view name) override {
    validate_subscription_name(name);
    auto id = read_id(name);
    if (!id) return std::nullopt;
    return describe_holder(*id);
  }

 private:
  bool has_tables() const { return host_.schema_version >= kRegistrySchemaVersion; }

  // Runs `work` in a write group on the row of subscription `name`, looked up inside the group (a group may
  // run `work` again after another request broke it, and the row may have gone meanwhile): no row, or with
  // `expected_id` not 0 a row of another id (the consumer's subscription was deleted and one of the same
  // name created), is SubscriptionNotFound before anything is written.
  void write_subscription(std::string_view name, std::uint64_t expected_id,
                          const std::function<void(Connection&, std::int64_t id)>& work) {
    host_.write([&](Connection& c, bool& writing) {
      auto id = find_id(c, name);
      if (!id || (expected_id != 0 && *id != i64(expected_id))) throw SubscriptionNotFound(std::string(name));
      writing = true;
      work(c, *id);
    });
  }

  void refuse_if_read_only(std::string_view name, std::string_view what) const {
    if (host_.read_only) {
      throw InvalidArgument(fmt::format("SQLite store '{}' was opened read-only: subscription '{}' cannot be {}",
                                        host_.path, name, what));
    }
  }

  std::optional<std::int64_t> read_id(std::string_view name) {
    if (!has_tables()) return std::nullopt;
    auto c = host_.readers->acquire();
    return find_id(*c, name);
  }

  // The holder of subscription `id`'s lease, or nullopt when its byte is not locked.
  std::optional<std::string> describe_holder(std::int64_t id) {
    if (!LeaseFile(lock_path_).locked(u64(id))) return std::nullopt;
    auto c = host_.readers->acquire();
    ScopedStatement st = c->prepare("SELECT holder FROM subscriptions WHERE id = ?1");
    st->bind(1, id);
    if (st->step() && !st->is_null(0)) return std::string(st->text(0));
    return std::string("a consumer that is starting");
  }

  StorageError io_error(std::string_view what) const { return lease_file_error(what, lock_path_); }

  RegistryHost host_;
  std::string lock_path_;
};

}  // namespace

std::unique_ptr<SubscriptionRegistry> make_registry(RegistryHost host) {
  return std::make_unique<SqliteRegistry>(std::move(host));
}

}  // namespace sourced::detail::sqlite
