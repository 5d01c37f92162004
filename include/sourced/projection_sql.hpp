#pragma once
// Statement parameters and result rows for the SQL read-model stores (SqliteProjectionStore,
// PostgresProjectionStore): a handler writes its model with plain SQL and these values. Value types.
//
//   tx.execute("INSERT INTO balances(account, amount) VALUES (?1, ?2)", {e.stream, amount});  // SQLite
//   tx.execute("INSERT INTO balances(account, amount) VALUES ($1, $2)", {e.stream, amount});  // PostgreSQL

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace sourced {

// One statement parameter: NULL, an integer, a real, text or bytes. Text and bytes are views: the
// caller keeps them alive until the call returns.
class SqlValue {
 public:
  struct Blob {
    std::string_view bytes;
  };
  using Variant = std::variant<std::nullptr_t, std::int64_t, double, std::string_view, Blob>;

  SqlValue(std::nullptr_t) : v_(nullptr) {}
  template <std::integral T>
  SqlValue(T v) : v_(static_cast<std::int64_t>(v)) {}
  SqlValue(double v) : v_(v) {}
  SqlValue(std::string_view v) : v_(v) {}
  SqlValue(const char* v) : v_(std::string_view(v)) {}
  SqlValue(const std::string& v) : v_(std::string_view(v)) {}
  static SqlValue blob(std::string_view bytes) { return SqlValue(Blob{bytes}); }

  const Variant& get() const { return v_; }

 private:
  explicit SqlValue(Blob b) : v_(b) {}
  Variant v_;
};

// One row of a query's result, valid during the callback that receives it.
class SqlRow {
 public:
  virtual ~SqlRow() = default;
  virtual int columns() const = 0;
  virtual bool is_null(int column) const = 0;
  // Throws StorageError when the value is not an integer (NULL included).
  virtual std::int64_t int64(int column) const = 0;
  virtual double real(int column) const = 0;
  // Text or bytes as stored (empty for NULL).
  virtual std::string_view text(int column) const = 0;
};

}  // namespace sourced
