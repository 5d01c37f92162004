#include "sourced/uuid.hpp"

#include <set>

#include <gtest/gtest.h>

using sourced::Uuid;

TEST(Uuid, RoundTripsThroughItsCanonicalText) {
  auto id = Uuid::v4();
  auto parsed = Uuid::parse(id.to_string());
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, id);
  EXPECT_EQ(id.version(), 4);
  EXPECT_EQ(Uuid::parse("6F1A2B3C-0000-4000-8000-00000000000A")->to_string(), "6f1a2b3c-0000-4000-8000-00000000000a");
}

TEST(Uuid, RejectsMalformedText) {
  for (const char* bad : {"", "not-a-uuid", "6f1a2b3c00004000800000000000000a", "6f1a2b3c-0000-4000-8000-00000000000",
                          "6f1a2b3c-0000-4000-8000-00000000000g", "6f1a2b3c+0000-4000-8000-00000000000a"}) {
    EXPECT_FALSE(Uuid::parse(bad)) << bad;
  }
}

TEST(Uuid, Version7IdsIncreaseStrictlyWithinAProcess) {
  Uuid prev = Uuid::v7();
  EXPECT_EQ(prev.version(), 7);
  for (int i = 0; i < 100000; ++i) {
    Uuid next = Uuid::v7();
    ASSERT_LT(prev, next) << i;
    prev = next;
  }
}

TEST(Uuid, RandomIdsDoNotRepeat) {
  std::set<Uuid> seen;
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(seen.insert(Uuid::v4()).second);
}
