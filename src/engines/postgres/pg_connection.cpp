#include "engines/postgres/pg_connection.hpp"

#include <charconv>
#include <vector>

#include <fmt/format.h>
#include <poll.h>

namespace sourced::detail::pg {
namespace {

std::string first_line(std::string_view text) {
  auto end = text.find('\n');
  std::string line(text.substr(0, end));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r' || line.back() == '.')) line.pop_back();
  return line;
}

void ignore_notice(void*, const char*) {
  // Notices ("schema already exists, skipping") are not errors; printing them would litter stderr.
}

// libpq's connect errors repeat the address ("connection to server at "h", port 1 failed: FATAL:  ..."),
// which the caller's sentence already names: keep the reason.
std::string connect_reason(std::string_view text) {
  std::string line = first_line(text);
  if (auto at = line.find(" failed: "); at != std::string::npos && line.starts_with("connection to server")) {
    line.erase(0, at + 9);
  }
  for (std::string_view prefix : {"FATAL:  ", "ERROR:  "}) {
    if (line.starts_with(prefix)) line.erase(0, prefix.size());
  }
  return line;
}

// `text` with the password of `url` (user:password@, or a password= parameter) replaced by "***": libpq
// quotes the URL, or the part it could not read, in its parse errors, and those reach logs.
std::string without_password(std::string text, const std::string& url) {
  std::vector<std::string> secrets;
  auto scheme = url.find("://");
  auto at = url.rfind('@');
  if (scheme != std::string::npos && at != std::string::npos && at > scheme) {
    std::string userinfo = url.substr(scheme + 3, at - scheme - 3);
    if (auto colon = userinfo.find(':'); colon != std::string::npos) secrets.push_back(userinfo.substr(colon + 1));
  }
  for (auto p = url.find("password="); p != std::string::npos; p = url.find("password=", p + 1)) {
    auto end = url.find('&', p);
    secrets.push_back(url.substr(p + 9, end == std::string::npos ? std::string::npos : end - p - 9));
  }
  auto replace_all = [](std::string& in, const std::string& what, const std::string& with) {
    if (what.empty()) return;
    for (auto i = in.find(what); i != std::string::npos; i = in.find(what, i + with.size())) {
      in.replace(i, what.size(), with);
    }
  };
  std::string redacted = url;
  for (const auto& secret : secrets) replace_all(redacted, secret, "***");
  replace_all(text, url, redacted);
  for (const auto& secret : secrets) replace_all(text, "\"" + secret + "\"", "\"***\"");
  return text;
}

}  // namespace

Target parse_target(const std::string& url) {
  Target t;
  // sourced's own query parameters are not libpq's: take them out before libpq sees the URL.
  std::string base = url, query;
  if (auto q = url.find('?'); q != std::string::npos) {
    base = url.substr(0, q);
    query = url.substr(q + 1);
  }
  std::string kept;
  std::size_t start = 0;
  while (start <= query.size() && !query.empty()) {
    auto amp = query.find('&', start);
    std::string item = query.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
    auto eq = item.find('=');
    std::string key = item.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key == "schema") {
      t.schema = value;
    } else if (key == "pool_size") {
      std::size_t n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || n == 0) {
        throw InvalidArgument(fmt::format("the PostgreSQL URL's pool_size must be a positive number, not '{}'", value));
      }
      t.pool_size = n;
    } else if (!item.empty()) {
      kept += (kept.empty() ? "" : "&") + item;
    }
    if (amp == std::string::npos) break;
    start = amp + 1;
  }
  t.libpq_url = kept.empty() ? base : base + "?" + kept;

  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(t.libpq_url.c_str(), &error);
  if (!options) {
    std::string why = error ? first_line(error) : "out of memory";
    if (error) PQfreemem(error);
    throw InvalidArgument(fmt::format("the PostgreSQL URL is not valid: {}", without_password(why, t.libpq_url)));
  }
  std::string host, port, user, db;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    if (!o->val) continue;
    std::string_view k = o->keyword;
    if (k == "host" || (k == "hostaddr" && host.empty())) host = o->val;
    if (k == "port") port = o->val;
    if (k == "user") user = o->val;
    if (k == "dbname") db = o->val;
  }
  PQconninfoFree(options);
  // libpq would only find a bad port when connecting, and report it as a connection failure.
  for (std::size_t start = 0; !port.empty() && start <= port.size();) {
    auto comma = port.find(',', start);
    std::string one = port.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    unsigned n = 0;
    auto [end, ec] = std::from_chars(one.data(), one.data() + one.size(), n);
    if (!one.empty() && (ec != std::errc() || end != one.data() + one.size() || n == 0 || n > 65535)) {
      throw InvalidArgument(
          fmt::format("the PostgreSQL URL is not valid: the port must be a number from 1 to 65535, "
                      "not '{}'",
                      one));
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  t.user = user;
  t.database = db;
  t.display = fmt::format("postgres://{}{}{}{}{}", user.empty() ? "" : user + "@", host.empty() ? "localhost" : host,
                          port.empty() ? "" : ":" + port, db.empty() ? "" : "/", db);
  return t;
}

void ArrayParam::put32(std::uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
  body_.append(b, 4);
}

void ArrayParam::add_bytes(std::string_view bytes) {
  put32(static_cast<std::uint32_t>(bytes.size()));
  body_.append(bytes);
  ++count_;
}

void ArrayParam::add_null() {
  put32(0xFFFFFFFFu);
  has_null_ = true;
  ++count_;
}

void ArrayParam::add_int4(std::int32_t v) {
  put32(4);
  put32(static_cast<std::uint32_t>(v));
  ++count_;
}

void ArrayParam::add_int8(std::int64_t v) {
  put32(8);
  auto u = static_cast<std::uint64_t>(v);
  put32(static_cast<std::uint32_t>(u >> 32));
  put32(static_cast<std::uint32_t>(u));
  ++count_;
}

void ArrayParam::add_bool(bool v) {
  put32(1);
  body_.push_back(v ? 1 : 0);
  ++count_;
}

void ArrayParam::add_uuid(const Uuid& id) {
  put32(16);
  body_.append(reinterpret_cast<const char*>(id.bytes().data()), 16);
  ++count_;
}

std::string ArrayParam::finish() const {
  ArrayParam header(element_);
  if (count_ == 0) {
    header.put32(0);  // no dimensions: the empty array
    header.put32(0);
    header.put32(element_);
    return header.body_;
  }
  header.put32(1);
  header.put32(has_null_ ? 1 : 0);
  header.put32(element_);
  header.put32(static_cast<std::uint32_t>(count_));
  header.put32(1);  // lower bound
  return header.body_ + body_;
}

Params& Params::text(std::string value) {
  values_.push_back(std::move(value));
  null_.push_back(false);
  formats_.push_back(0);
  types_.push_back(0);
  return *this;
}

Params& Params::binary(std::string value, Oid type) {
  values_.push_back(std::move(value));
  null_.push_back(false);
  formats_.push_back(1);
  types_.push_back(type);
  return *this;
}

Params& Params::null() {
  values_.emplace_back();
  null_.push_back(true);
  formats_.push_back(0);
  types_.push_back(0);
  return *this;
}

const char* const* Params::values() {
  pointers_.resize(values_.size());
  lengths_.resize(values_.size());
  for (std::size_t i = 0; i < values_.size(); ++i) {
    pointers_[i] = null_[i] ? nullptr : values_[i].data();
    lengths_[i] = static_cast<int>(values_[i].size());
  }
  return pointers_.data();
}

std::int64_t Result::int8(int row, int col) const {
  auto s = get(row, col);
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (is_null(row, col) || ec != std::errc() || end != s.data() + s.size()) unreadable(row, col, "an integer");
  return v;
}

Uuid Result::uuid(int row, int col) const {
  auto id = is_null(row, col) ? std::nullopt : Uuid::parse(get(row, col));
  if (!id) unreadable(row, col, "a UUID");
  return *id;
}

void Result::unreadable(int row, int col, std::string_view type) const {
  const char* name = PQfname(r_, col);
  std::string value = is_null(row, col) ? "NULL" : fmt::format("'{}'", get(row, col).substr(0, 64));
  throw StorageError(fmt::format("PostgreSQL returned {} in column '{}' (row {}), where {} was expected", value,
                                 name ? name : std::to_string(col), row, type));
}

Connection::Connection(const Target& target) : display_(target.display) {
  // Keywords are processed in order and the last value wins: the defaults come before the URL so the
  // URL may override them; the encoding comes after because the engine relies on UTF-8.
  // TCP keepalives and tcp_user_timeout bound how long a call can block on a link that died silently
  // (a partition sends no reset): about 30 s instead of the kernel's two hours.
  const char* keywords[] = {
      "connect_timeout",  "application_name", "keepalives", "keepalives_idle", "keepalives_interval",
      "keepalives_count", "tcp_user_timeout", "dbname",     "client_encoding", nullptr};
  const char* values[] = {"10", "sourced", "1", "10", "5", "4", "30000", target.libpq_url.c_str(), "UTF8", nullptr};
  conn_ = PQconnectdbParams(keywords, values, 1);
  if (!conn_) throw ConnectionError(fmt::format("cannot connect to PostgreSQL at {}: out of memory", display_));
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string why = connect_reason(PQerrorMessage(conn_));
    PQfinish(conn_);
    conn_ = nullptr;
    throw ConnectionError(fmt::format("cannot connect to PostgreSQL at {}: {}", display_, why));
  }
  PQsetNoticeProcessor(conn_, ignore_notice, nullptr);
  // The ordering argument (docs/postgres.md) needs each statement after the head lock to see what the
  // previous lock holder committed: READ COMMITTED, whatever the server's or role's default is.
  // JIT compilation pays off for long analytical queries, never for ours (one page, one group): left on,
  // the server JIT-compiled the filtered $all page, whose cost it overestimates, for ~450 ms each time.
  PGresult* r = PQexec(conn_, PQserverVersion(conn_) >= 110000
                                  ? "SET default_transaction_isolation = 'read committed'; SET jit = off"
                                  : "SET default_transaction_isolation = 'read committed'");
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  if (!ok) {
    std::string why = first_line(PQerrorMessage(conn_));
    PQfinish(conn_);
    conn_ = nullptr;
    throw ConnectionError(fmt::format("cannot set up a connection to PostgreSQL at {}: {}", display_, why));
  }
}

Connection::~Connection() {
  if (conn_) PQfinish(conn_);
}

void Connection::fail(const PGresult* r, std::string_view what) {
  std::string state, message;
  if (r) {
    if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) state = s;
    if (const char* m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)) message = m;
  }
  if (message.empty()) message = first_line(PQerrorMessage(conn_));
  if (message.empty()) message = "unknown error";
  if (!ok() || is_connection_state(state) || (r == nullptr && state.empty())) {
    throw ConnectionError(fmt::format("lost the connection to PostgreSQL at {} while {}: {}", display_, what, message));
  }
  if (state == "42501") {
    throw ServerError(fmt::format("PostgreSQL refused {} at {}: {}", what, display_, message), state);
  }
  throw ServerError(fmt::format("PostgreSQL failed while {} at {}: {} (SQLSTATE {})", what, display_, message, state),
                    state);
}

Result Connection::check(PGresult* r, std::string_view what) {
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return Result(r);
  Result guard(r);  // frees r after fail() builds its message
  fail(r, what);
}

void Connection::exec(const char* sql, std::string_view what) { check(PQexec(conn_, sql), what); }

Result Connection::query(const std::string& sql, Params& params, Format format, std::string_view what) {
  const char* const* values = params.values();
  return check(PQexecParams(conn_, sql.c_str(), params.size(), params.types(), values, params.lengths(),
                            params.formats(), static_cast<int>(format)),
               what);
}

Result Connection::prepared(int id, const std::string& sql, Params& params, Format format, std::string_view what) {
  auto index = static_cast<std::size_t>(id);
  if (prepared_.size() <= index) prepared_.resize(index + 1, false);
  std::string name = "sourced_" + std::to_string(id);
  if (!prepared_[index]) {
    check(PQprepare(conn_, name.c_str(), sql.c_str(), params.size(), params.types()), what);
    prepared_[index] = true;
  }
  const char* const* values = params.values();
  return check(PQexecPrepared(conn_, name.c_str(), params.size(), values, params.lengths(), params.formats(),
                              static_cast<int>(format)),
               what);
}

bool Connection::idle_and_healthy() {
  if (!ok()) return false;
  pollfd p{PQsocket(conn_), POLLIN, 0};
  int n = ::poll(&p, 1, 0);
  // Readable while idle means the server sent a termination notice or closed the socket.
  return n == 0;
}

Pool::Pool(Target target, std::size_t size) : target_(std::move(target)), size_(std::max<std::size_t>(size, 1)) {}

Pool::Lease Pool::acquire() {
  std::unique_lock lock(mu_);
  for (;;) {
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      if (c->idle_and_healthy()) return Lease(this, std::move(c));
      --open_;  // dropped: the server closed it while it sat in the pool
      continue;
    }
    if (open_ < size_) {
      ++open_;
      lock.unlock();
      try {
        return Lease(this, std::make_unique<Connection>(target_));
      } catch (...) {
        lock.lock();
        --open_;
        cv_.notify_one();
        throw;
      }
    }
    cv_.wait(lock);
  }
}

void Pool::release(std::unique_ptr<Connection> c) {
  std::lock_guard lock(mu_);
  if (c->ok() && PQtransactionStatus(c->handle()) == PQTRANS_IDLE) {
    idle_.push_back(std::move(c));
  } else {
    --open_;  // broken, or left inside a transaction by a failure: never hand it out again
    c.reset();
  }
  cv_.notify_one();
}

std::string quote_ident(std::string_view name) {
  std::string q = "\"";
  for (char c : name) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

}  // namespace sourced::detail::pg
