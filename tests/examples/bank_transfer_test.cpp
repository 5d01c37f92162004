// `bank transfer FROM TO AMOUNT [--command-id UUID]`, run as a script would, on a SQLite file and on
// PostgreSQL: exit 0 when the transfer completed or was compensated (the credit refused, the money
// refunded), 3 when the debit was refused, 2 on bad input; a repeated command id moves the money once.

#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "store/engines.hpp"

namespace sourced::testing {
namespace {

struct BankRun {
  int code;
  std::string out;
  std::string err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::vector<EngineParam> sql_engines() {
  std::vector<EngineParam> out;
  for (auto& e : all_engines())
    if (e.name != "memory") out.push_back(e);
  return out;
}

class BankTransfer : public ::testing::TestWithParam<EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    location_ = *harness_->location();
    mail_ = (dir_.path() / "mail.txt").string();
    for (auto [id, owner] : {std::pair{"ada", "Ada"}, {"bob", "Bob"}, {"cy", "Cy"}}) {
      ASSERT_EQ(bank({"open", id, owner}).code, 0);
    }
    ASSERT_EQ(bank({"deposit", "ada", "100"}).code, 0);
    ASSERT_EQ(bank({"close", "cy"}).code, 0);
  }

  BankRun bank(const std::vector<std::string>& args) {
    auto out = dir_.path() / "stdout", err = dir_.path() / "stderr";
    std::string cmd = quote(BANK_BINARY);
    for (const auto& a : args) cmd += " " + quote(a);
    cmd += " --store " + quote(location_) + " --mail " + quote(mail_) + " >" + quote(out.string()) + " 2>" +
           quote(err.string());
    int status = std::system(("sh -c " + quote(cmd)).c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  }
  std::string balance(const std::string& account) { return bank({"balance", account}).out; }
  std::uint64_t events_in(const std::string& stream) {
    auto store = harness_->open();
    auto info = store->stream_info(stream);
    return info ? info->last_version.value() : 0;
  }

  TempDir dir_;
  std::unique_ptr<EngineHarness> harness_;
  std::string location_;
  std::string mail_;
};

TEST_P(BankTransfer, ACompletedTransferExitsZero) {
  auto r = bank({"transfer", "ada", "bob", "30"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("completed: 30 moved from ada to bob"), std::string::npos) << r.out;
  EXPECT_EQ(balance("ada"), "account-ada: owner Ada, balance 70, open, version 3\n");
  EXPECT_EQ(balance("bob"), "account-bob: owner Bob, balance 30, open, version 2\n");
}

TEST_P(BankTransfer, ACreditToAClosedAccountIsRefundedAndExitsZero) {
  auto r = bank({"transfer", "ada", "cy", "30"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("compensated: the credit to cy was refused (account cy is closed), 30 refunded to ada"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(balance("ada"), "account-ada: owner Ada, balance 100, open, version 4\n") << "debited, then refunded";
  EXPECT_EQ(balance("cy"), "account-cy: owner Cy, balance 0, closed, version 2\n");
}

TEST_P(BankTransfer, ARefusedDebitExitsThree) {
  auto r = bank({"transfer", "bob", "ada", "30"});
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(
      r.err.find("failed: the debit of 30 from bob was refused (account bob cannot withdraw 30: the balance is 0)"),
      std::string::npos)
      << r.err;
  r = bank({"transfer", "nobody", "ada", "30"});
  EXPECT_EQ(r.code, 3);
  EXPECT_NE(r.err.find("account nobody does not exist"), std::string::npos) << r.err;
  EXPECT_EQ(balance("ada"), "account-ada: owner Ada, balance 100, open, version 2\n");
}

TEST_P(BankTransfer, BadInputExitsTwo) {
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"transfer", "ada", "bob", "ten"},
                                             {"transfer", "ada", "bob", "0"},
                                             {"transfer", "ada", "Bob!", "10"},
                                             {"transfer", "ada", "ada", "10"},
                                             {"transfer", "ada", "bob"},
                                             {"transfer", "ada", "bob", "10", "--command-id", "x"}}) {
    auto r = bank(args);
    EXPECT_EQ(r.code, 2) << args.back() << ": " << r.err;
    EXPECT_FALSE(r.err.empty());
  }
  EXPECT_EQ(events_in("account-ada"), 2u) << "bad input moves nothing";
}

TEST_P(BankTransfer, ARepeatedCommandIdMovesTheMoneyOnce) {
  const std::string id = Uuid::v7().to_string();
  auto first = bank({"transfer", "ada", "bob", "25", "--command-id", id});
  ASSERT_EQ(first.code, 0) << first.err;
  auto second = bank({"transfer", "ada", "bob", "25", "--command-id", id});
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.out.find("completed: 25 moved from ada to bob (a repeat of command " + id), std::string::npos)
      << second.out;
  EXPECT_EQ(balance("ada"), "account-ada: owner Ada, balance 75, open, version 3\n");
  EXPECT_EQ(balance("bob"), "account-bob: owner Bob, balance 25, open, version 2\n");
  EXPECT_EQ(events_in("transfer-" + id), 2u) << "requested and completed, once";
}

INSTANTIATE_TEST_SUITE_P(Engines, BankTransfer, ::testing::ValuesIn(sql_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
