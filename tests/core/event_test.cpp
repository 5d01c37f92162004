#include "sourced/event.hpp"

#include <gtest/gtest.h>

#include "sourced/error.hpp"

using namespace sourced;

TEST(StreamId, LimitsAreThoseOfTheContract) {
  EXPECT_EQ(kMaxStreamIdBytes, 1000u);
  EXPECT_EQ(kAllStream, "$all");
}

TEST(StreamId, AcceptsOrdinaryNamesAndUtf8) {
  EXPECT_FALSE(stream_id_problem("account-42"));
  EXPECT_FALSE(stream_id_problem("compte-\xC3\xA9t\xC3\xA9"));
  EXPECT_FALSE(stream_id_problem(std::string(kMaxStreamIdBytes, 'a')));
}

TEST(StreamId, RejectsEmptyLongControlAndInvalidUtf8) {
  EXPECT_TRUE(stream_id_problem(""));
  EXPECT_TRUE(stream_id_problem(std::string(kMaxStreamIdBytes + 1, 'a')));
  EXPECT_TRUE(stream_id_problem("a\nb"));
  EXPECT_TRUE(stream_id_problem(std::string("a\0b", 3)));
  EXPECT_TRUE(stream_id_problem("a\x7F"));
  EXPECT_TRUE(stream_id_problem("a\xC2\x85"));     // C1 control (NEL)
  EXPECT_TRUE(stream_id_problem("\xC3"));          // truncated sequence
  EXPECT_TRUE(stream_id_problem("\xC0\xAF"));      // overlong
  EXPECT_TRUE(stream_id_problem("\xED\xA0\x80"));  // surrogate
  EXPECT_TRUE(stream_id_problem("\xFF"));
}

TEST(StreamId, CategoryIsTheTextBeforeTheFirstDash) {
  EXPECT_EQ(category_of("account-42"), "account");
  EXPECT_EQ(category_of("account-42-x"), "account");
  EXPECT_EQ(category_of("account"), "account");
  EXPECT_TRUE(is_system_stream("$all"));
  EXPECT_FALSE(is_system_stream("all"));
}

TEST(ExpectedVersion, ParsesWhatItPrints) {
  for (auto e : {ExpectedVersion::any(), ExpectedVersion::no_stream(), ExpectedVersion::stream_exists(),
                 ExpectedVersion::exact(0), ExpectedVersion::exact(17)}) {
    EXPECT_EQ(ExpectedVersion::parse(e.to_string()), e);
  }
  EXPECT_FALSE(ExpectedVersion::parse("-1"));
  EXPECT_FALSE(ExpectedVersion::parse("12x"));
  EXPECT_FALSE(ExpectedVersion::parse(""));
}

TEST(Errors, WrongExpectedVersionNamesStreamExpectedAndActual) {
  WrongExpectedVersion e("account-1", ExpectedVersion::exact(3), StreamVersion(5));
  EXPECT_EQ(e.code(), ErrorCode::wrong_expected_version);
  EXPECT_EQ(e.stream(), "account-1");
  EXPECT_EQ(e.expected(), ExpectedVersion::exact(3));
  EXPECT_EQ(e.actual(), StreamVersion(5));
  EXPECT_STREQ(e.what(), "wrong expected version for stream 'account-1': expected version 3, but it is at version 5");
  WrongExpectedVersion missing("a", ExpectedVersion::stream_exists(), std::nullopt);
  EXPECT_STREQ(missing.what(),
               "wrong expected version for stream 'a': expected an existing stream, but the stream does not exist");
}

TEST(Timestamp, FormatsAsIsoUtcWithMicroseconds) {
  Timestamp t{std::chrono::microseconds(1764090060123456)};
  EXPECT_EQ(format_timestamp(t), "2025-11-25T17:01:00.123456Z");
}
