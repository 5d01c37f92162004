#include "sourced/uuid.hpp"

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

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

TEST(Uuid, Version7IdsAreUniqueAndIncreasingPerThreadUnderManyThreads) {
  // Ids come from one process-wide (millisecond, counter) word without a lock: each thread's ids must
  // still increase, and no two threads may get the same id (even with the counter carrying into the
  // millisecond many times over: 64 threads x 20,000 ids is far more than 4,096 per millisecond).
  constexpr int kThreads = 64, kEach = 20000;
  std::vector<std::vector<Uuid>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&ids, t] {
      ids[t].reserve(kEach);
      for (int i = 0; i < kEach; ++i) ids[t].push_back(Uuid::v7());
    });
  }
  for (auto& th : threads) th.join();
  std::vector<Uuid> all;
  for (auto& mine : ids) {
    EXPECT_TRUE(std::is_sorted(mine.begin(), mine.end()));
    EXPECT_EQ(std::adjacent_find(mine.begin(), mine.end()), mine.end());
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "an id was generated twice";
  // The millisecond and counter alone already tell every id apart.
  std::set<std::uint64_t> prefixes;
  for (const Uuid& id : all) {
    std::uint64_t p = 0;
    for (int i = 0; i < 8; ++i) p = p << 8 | id.bytes()[i];
    prefixes.insert(p);
  }
  EXPECT_EQ(prefixes.size(), all.size());
}

TEST(Uuid, RandomIdsDoNotRepeat) {
  std::set<Uuid> seen;
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(seen.insert(Uuid::v4()).second);
}

// fork() copies the random generators: a child that did not reseed would draw the parent's next bits and
// make the parent's next ids.
TEST(Uuid, AForkedChildDoesNotRepeatItsParentsIds) {
  (void)Uuid::v4();  // the parent's generator exists before the fork
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    std::string ids = Uuid::v4().to_string() + Uuid::v7().to_string();
    _exit(write(fds[1], ids.data(), ids.size()) == static_cast<ssize_t>(ids.size()) ? 0 : 1);
  }
  close(fds[1]);
  std::string parent = Uuid::v4().to_string() + Uuid::v7().to_string();
  std::string child(72, '\0');
  ssize_t got = 0;
  while (got < 72) {
    ssize_t n = read(fds[0], child.data() + got, 72 - got);
    ASSERT_GT(n, 0);
    got += n;
  }
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(parent.substr(0, 36), child.substr(0, 36));
  // The random tail of the v7 ids (the timestamp and counter may well be equal).
  EXPECT_NE(parent.substr(36 + 19), child.substr(36 + 19));
}

TEST(Uuid, NameBasedIdsMatchTheRfcExample) {
  // RFC 9562 appendix A.4: the DNS namespace and "www.example.com".
  auto dns = *Uuid::parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8");
  EXPECT_EQ(Uuid::v5(dns, "www.example.com").to_string(), "2ed6657d-e927-568b-95e1-2665a8aea6a2");
  EXPECT_EQ(Uuid::v5(dns, "www.example.com").version(), 5);
  EXPECT_NE(Uuid::v5(dns, "www.example.org"), Uuid::v5(dns, "www.example.com"));
  // A name longer than one SHA-1 block.
  EXPECT_EQ(Uuid::v5(dns, std::string(200, 'a')), Uuid::v5(dns, std::string(200, 'a')));
  EXPECT_NE(Uuid::v5(dns, std::string(200, 'a')), Uuid::v5(dns, std::string(201, 'a')));
}
