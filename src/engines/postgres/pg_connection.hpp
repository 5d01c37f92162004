#pragma once
// A thin layer over libpq for the PostgreSQL engine: connections that turn failures into sourced errors,
// a pool that drops broken connections, and the binary wire formats the engine sends and reads.

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <libpq-fe.h>

#include "sourced/error.hpp"
#include "sourced/event.hpp"

namespace sourced::detail::pg {

// Type OIDs are fixed in PostgreSQL's catalog; libpq-dev does not ship the server's pg_type.h.
inline constexpr Oid kBoolOid = 16;
inline constexpr Oid kByteaOid = 17;
inline constexpr Oid kInt8Oid = 20;
inline constexpr Oid kInt4Oid = 23;
inline constexpr Oid kTextOid = 25;
inline constexpr Oid kUuidOid = 2950;
inline constexpr Oid kBoolArrayOid = 1000;
inline constexpr Oid kByteaArrayOid = 1001;
inline constexpr Oid kInt4ArrayOid = 1007;
inline constexpr Oid kTextArrayOid = 1009;
inline constexpr Oid kInt8ArrayOid = 1016;
inline constexpr Oid kUuidArrayOid = 2951;

// Where to connect, split from the URL the user gave.
// SQLSTATEs that mean the session is gone: connection exceptions (08xxx) and operator intervention
// (57P01 admin shutdown: the backend was terminated; 57P02 crash shutdown; 57P03 cannot connect now).
inline bool is_connection_state(std::string_view state) {
  return state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03";
}

// What the server refused, with its SQLSTATE. Transient for the classes where repeating the statement may
// succeed: 40 (serialization failure, deadlock), 53 (insufficient resources), 55P03 (lock not available),
// 57014 (statement timeout or cancel), and the states of a session that is gone (is_connection_state): a
// caller that repeats on a new connection is where it would be after a lost connection. Connection::fail
// turns those into ConnectionError; they reach a ServerError where a result is read while libpq still
// calls the connection good (the read-model store's pipeline), or when a function raises them.
class ServerError : public StorageError {
 public:
  ServerError(const std::string& message, std::string sqlstate)
      : StorageError(message, is_transient_state(sqlstate)), sqlstate_(std::move(sqlstate)) {}
  const std::string& sqlstate() const { return sqlstate_; }
  static bool is_transient_state(std::string_view s) {
    return s.starts_with("40") || s.starts_with("53") || s == "55P03" || s == "57014" || is_connection_state(s);
  }

 private:
  std::string sqlstate_;
};

struct Target {
  std::string libpq_url;  // the URL without sourced's own parameters
  std::string display;    // postgres://user@host:port/db, without the password: safe for error messages
  std::string user;
  std::string database;
  std::optional<std::string> schema;     // ?schema=
  std::optional<std::size_t> pool_size;  // ?pool_size=
};

// Parses a postgres:// URL; throws ConnectionError with one sentence when libpq cannot use it.
Target parse_target(const std::string& url);

// Binary wire format helpers (network byte order).
inline std::int64_t read_int8(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return static_cast<std::int64_t>(v);
}
inline Uuid read_uuid(const char* p) {
  Uuid::Bytes b;
  std::memcpy(b.data(), p, 16);
  return Uuid(b);
}
// timestamptz on the wire: microseconds since 2000-01-01 UTC.
inline Timestamp read_timestamptz(const char* p) {
  constexpr std::int64_t kPgEpochMicros = 946684800LL * 1000000LL;
  return Timestamp(std::chrono::microseconds(read_int8(p) + kPgEpochMicros));
}

// A one-dimensional array parameter in binary format.
class ArrayParam {
 public:
  explicit ArrayParam(Oid element) : element_(element) {}
  void add_bytes(std::string_view bytes);
  void add_null();
  void add_int4(std::int32_t v);
  void add_int8(std::int64_t v);
  void add_bool(bool v);
  void add_uuid(const Uuid& id);
  void add_uuid(const std::optional<Uuid>& id) { id ? add_uuid(*id) : add_null(); }
  // The encoded array; call once all elements are added.
  std::string finish() const;

 private:
  void put32(std::uint32_t v);
  Oid element_;
  std::string body_;
  std::int32_t count_ = 0;
  bool has_null_ = false;
};

// Parameters of one statement: text or binary values.
class Params {
 public:
  Params& text(std::string value);
  Params& binary(std::string value, Oid type);
  Params& null();
  int size() const { return static_cast<int>(values_.size()); }
  // Pointers for libpq; valid until this object changes.
  const char* const* values();
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }
  const Oid* types() const { return types_.data(); }

 private:
  std::vector<std::string> values_;
  std::vector<bool> null_;
  std::vector<const char*> pointers_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  std::vector<Oid> types_;
};

class Result {
 public:
  explicit Result(PGresult* r) : r_(r) {}
  Result(Result&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Result& operator=(Result&& o) noexcept {
    std::swap(r_, o.r_);
    return *this;
  }
  Result(const Result&) = delete;
  ~Result() {
    if (r_) PQclear(r_);
  }
  int rows() const { return PQntuples(r_); }
  bool is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
  std::string_view get(int row, int col) const {
    return {PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col))};
  }
  const char* raw(int row, int col) const { return PQgetvalue(r_, row, col); }
  // Text-format helpers. A value that does not parse (NULL included) throws StorageError naming the
  // column: a silent 0 would be a position or version no caller could tell from a real one.
  std::int64_t int8(int row, int col) const;
  Uuid uuid(int row, int col) const;
  bool boolean(int row, int col) const { return get(row, col) == "t"; }

 private:
  [[noreturn]] void unreadable(int row, int col, std::string_view type) const;

  PGresult* r_;
};

enum class Format { text = 0, binary = 1 };

// One libpq connection. Not thread-safe: the pool hands it to one thread at a time.
class Connection {
 public:
  // Connects; throws ConnectionError with one sentence when it cannot.
  explicit Connection(const Target& target);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one or more statements without parameters. `what` completes "while ..." in error messages.
  void exec(const char* sql, std::string_view what);
  // Runs one statement with parameters.
  Result query(const std::string& sql, Params& params, Format format, std::string_view what);
  // Runs statement number `id` (prepared on this connection the first time it is used).
  Result prepared(int id, const std::string& sql, Params& params, Format format, std::string_view what);

  // False once the link is known to be broken; the pool then drops the connection.
  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  // Checks, without blocking, that an idle connection has not been closed or terminated by the server
  // since it was last used: an idle connection receives nothing unless the server is closing it.
  bool idle_and_healthy();
  PGconn* handle() { return conn_; }

 private:
  // Throws the sourced error for a failed result (or a failure without a result).
  [[noreturn]] void fail(const PGresult* r, std::string_view what);
  Result check(PGresult* r, std::string_view what);

  PGconn* conn_ = nullptr;
  std::string display_;
  std::vector<bool> prepared_;
};

// A fixed-size pool of connections, opened lazily. Broken connections are dropped on release and
// replaced on a later acquire, so the store recovers from a restarted server or a killed backend.
class Pool {
 public:
  Pool(Target target, std::size_t size);

  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Connection> c) : pool_(pool), conn_(std::move(c)) {}
    Lease(Lease&& o) noexcept = default;
    Lease(const Lease&) = delete;
    ~Lease() {
      if (conn_) pool_->release(std::move(conn_));
    }
    Connection* operator->() { return conn_.get(); }
    Connection& operator*() { return *conn_; }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  Lease acquire();
  const Target& target() const { return target_; }

 private:
  void release(std::unique_ptr<Connection> c);

  Target target_;
  std::size_t size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_ = 0;  // idle + leased + being opened
};

// Quotes an identifier for SQL text ("name").
std::string quote_ident(std::string_view name);

}  // namespace sourced::detail::pg
