// A transfer process manager killed (SIGKILL) mid-transfer resumes and finishes every transfer exactly
// once: transfer_worker processes run the process manager over a real SQLite file or the PostgreSQL
// server and are killed at random points; the last one finishes. Money is conserved, each account is
// debited and credited once per transfer, and each compensation happens once.

#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cqrs/transfer_app.hpp"
#include "store/engines.hpp"

namespace sourced {
namespace {

using namespace std::chrono_literals;
using namespace testing::bank;

// A transfer_worker process; a thread counts the events it reports handled.
class Worker {
 public:
  explicit Worker(const std::string& location) {
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      ::execl(TRANSFER_WORKER, TRANSFER_WORKER, location.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(out[1]);
    reader_ = std::thread([this, fd = out[0]] {
      std::FILE* f = ::fdopen(fd, "r");
      char line[128];
      while (std::fgets(line, sizeof line, f)) {
        std::lock_guard lock(mu_);
        if (std::string(line) != "held\n") ++handled_;
      }
      std::fclose(f);
    });
  }
  ~Worker() { kill(); }
  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (reader_.joinable()) reader_.join();
  }
  int handled() {
    std::lock_guard lock(mu_);
    return handled_;
  }

 private:
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  int handled_ = 0;
};

class ProcessManagerCrashTest : public ::testing::TestWithParam<testing::EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    if (!harness_->location()) GTEST_SKIP() << "another process cannot open this engine";
    store_ = harness_->open();
  }
  std::unique_ptr<testing::EngineHarness> harness_;
  std::unique_ptr<EventStore> store_;
};

INSTANTIATE_TEST_SUITE_P(Engines, ProcessManagerCrashTest,
                         ::testing::Values(testing::all_engines()[1]
#ifdef SOURCED_WITH_POSTGRES
                                           ,
                                           testing::all_engines()[2]
#endif
                                           ),
                         [](const auto& info) { return info.param.name; });

TEST_P(ProcessManagerCrashTest, KilledMidTransferEveryTransferFinishesExactlyOnce) {
  std::mt19937_64 rng(std::random_device{}());
  auto pick = [&](int n) { return static_cast<int>(std::uniform_int_distribution<int>(0, n - 1)(rng)); };
  TransferApp app(*store_);
  app.manager.create_subscription();
  const std::vector<std::string> accounts = {"a", "b", "c", "d", "closed"};
  for (const auto& a : accounts) {
    app.bus.dispatch(Open{a, a});
    app.bus.dispatch(Deposit{a, 100});
  }
  app.bus.dispatch(Close{"closed"});
  const long total = 100 * static_cast<long>(accounts.size());

  struct Requested {
    std::string from, to;
    Uuid id;
  };
  std::map<std::string, Requested> transfers;
  auto request = [&](int n) {
    for (int i = 0; i < n; ++i) {
      std::string from = accounts[pick(5)], to = accounts[pick(5)];
      if (from == to) continue;
      std::string t = "t" + std::to_string(transfers.size());
      Uuid id = Uuid::v7();
      ASSERT_FALSE(app.request(t, from, to, 1 + pick(40), id).rejected());
      transfers[t] = {from, to, id};
    }
  };
  request(20);
  const std::string location = *harness_->location();
  int kills = 0;
  for (int round = 0; round < 8; ++round) {
    Worker worker(location);
    int target = 1 + pick(10);
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (worker.handled() < target && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    worker.kill();
    ++kills;
    request(4);  // more arrive while nobody runs the process manager
  }
  auto all_final = [&] {
    for (const auto& [t, r] : transfers) {
      auto stage = app.stage(t);
      if (stage != Transfer::Stage::completed && stage != Transfer::Stage::compensated &&
          stage != Transfer::Stage::failed) {
        return false;
      }
      if (!app.manager.stopped(r.id.to_string())) return false;
    }
    return true;
  };
  {
    Worker last(location);
    auto deadline = std::chrono::steady_clock::now() + 120s;
    while (!all_final() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
    last.kill();
  }
  ASSERT_TRUE(all_final()) << "every transfer ends";

  long sum = 0;
  for (const auto& a : accounts) sum += app.balance(a);
  EXPECT_EQ(sum, total) << "money is conserved";
  // Each account's events by transfer (correlation id).
  std::map<std::string, std::map<std::string, std::vector<std::string>>> by_transfer;  // id -> account -> types
  for (const auto& a : accounts) {
    for (const auto& e : store_->read_stream("account-" + a).to_vector()) {
      if (e.correlation_id) by_transfer[e.correlation_id->to_string()][a].push_back(e.type);
    }
  }
  int completed = 0, compensated = 0, failed = 0;
  for (const auto& [t, r] : transfers) {
    SCOPED_TRACE(t + " " + r.from + " -> " + r.to);
    auto moves = by_transfer[r.id.to_string()];
    switch (app.stage(t)) {
      case Transfer::Stage::completed:
        ++completed;
        EXPECT_EQ(moves[r.from], std::vector<std::string>{"MoneyWithdrawn"});
        EXPECT_EQ(moves[r.to], std::vector<std::string>{"MoneyDeposited"});
        EXPECT_NE(r.to, "closed");
        break;
      case Transfer::Stage::compensated:
        ++compensated;
        EXPECT_EQ(moves[r.from], (std::vector<std::string>{"MoneyWithdrawn", "MoneyDeposited"}));
        EXPECT_TRUE(moves[r.to].empty());
        EXPECT_EQ(r.to, "closed");
        break;
      default:
        ++failed;
        EXPECT_TRUE(moves[r.from].empty());
        EXPECT_TRUE(moves[r.to].empty());
        break;
    }
    for (const auto& [account, types] : moves) {
      if (account != r.from && account != r.to) EXPECT_TRUE(types.empty()) << "no other account moved: " << account;
    }
  }
  std::cout << "[ info ] " << transfers.size() << " transfers (" << completed << " completed, " << compensated
            << " compensated, " << failed << " failed), " << kills << " kills\n";
}

}  // namespace
}  // namespace sourced
