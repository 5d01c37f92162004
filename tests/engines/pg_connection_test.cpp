// The libpq layer under the PostgreSQL engine, against the real server of scripts/with-postgres.sh:
// values that do not parse fail loudly, naming the column, instead of turning into 0 or vanishing.

#include "engines/postgres/pg_connection.hpp"

#include <string>

#include <gtest/gtest.h>

#include "store/engines.hpp"

namespace sourced::detail::pg {
namespace {

using sourced::testing::pg_skip_message;
using sourced::testing::test_pg_url;

Result select(const std::string& sql) {
  Target target = parse_target(*test_pg_url());
  Connection c(target);
  Params none;
  return c.query(sql, none, Format::text, "testing");
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const StorageError& e) {
    return e.what();
  }
  return "";
}

TEST(PgResult, Int8ReadsIntegersAndNamesTheColumnOfAnythingElse) {
  if (!test_pg_url()) GTEST_SKIP() << pg_skip_message();
  Result r = select(
      "SELECT 42::bigint AS good, -7::bigint AS negative, 'x17'::text AS first_position, '17x'::text AS version, "
      "NULL::bigint AS last_version, '99999999999999999999'::text AS huge");
  EXPECT_EQ(r.int8(0, 0), 42);
  EXPECT_EQ(r.int8(0, 1), -7);
  std::string e = error_of([&] { r.int8(0, 2); });
  EXPECT_NE(e.find("'first_position'"), std::string::npos) << e;
  EXPECT_NE(e.find("'x17'"), std::string::npos) << e;
  e = error_of([&] { r.int8(0, 3); });
  EXPECT_NE(e.find("'version'"), std::string::npos) << e;
  e = error_of([&] { r.int8(0, 4); });
  EXPECT_NE(e.find("'last_version'"), std::string::npos) << e;
  EXPECT_NE(e.find("NULL"), std::string::npos) << e;
  e = error_of([&] { r.int8(0, 5); });
  EXPECT_NE(e.find("'huge'"), std::string::npos) << e;
}

TEST(PgResult, UuidReadsUuidsAndNamesTheColumnOfAnythingElse) {
  // finish_group reads the ids append_group found stored through this: an id it could not read used to
  // be dropped, so the append's outcome was decided without it.
  if (!test_pg_url()) GTEST_SKIP() << pg_skip_message();
  Result r = select(
      "SELECT '0190b6a2-7c3e-7d4f-8a1b-2c3d4e5f6a7b'::uuid AS found_id, 'not-a-uuid'::text AS found_id, "
      "NULL::uuid AS other_id");
  EXPECT_EQ(r.uuid(0, 0).to_string(), "0190b6a2-7c3e-7d4f-8a1b-2c3d4e5f6a7b");
  std::string e = error_of([&] { r.uuid(0, 1); });
  EXPECT_NE(e.find("'found_id'"), std::string::npos) << e;
  EXPECT_NE(e.find("UUID"), std::string::npos) << e;
  e = error_of([&] { r.uuid(0, 2); });
  EXPECT_NE(e.find("'other_id'"), std::string::npos) << e;
}

}  // namespace
}  // namespace sourced::detail::pg
