// The `bank` example binary, run as a script would: its one-at-a-time commands' exit codes, messages and
// idempotency by --command-id, and the scenario, on a SQLite file and on PostgreSQL.

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "sourced/projection_partitions.hpp"
#include "store/engines.hpp"

namespace sourced::testing {
namespace {

struct Result {
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

class Bank : public ::testing::TestWithParam<EngineParam> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    if (auto why = harness_->skip_reason()) GTEST_SKIP() << *why;
    location_ = *harness_->location();
    mail_ = (dir_.path() / "mail.txt").string();
  }

  Result bank(const std::vector<std::string>& args) {
    static std::atomic<int> calls{0};
    int call = calls++;
    auto out = dir_.path() / ("stdout-" + std::to_string(call)), err = dir_.path() / ("stderr-" + std::to_string(call));
    std::string cmd = quote(BANK_BINARY);
    for (const auto& a : args) cmd += " " + quote(a);
    cmd += " --store " + quote(location_) + " --mail " + quote(mail_) + " >" + quote(out.string()) + " 2>" +
           quote(err.string());
    int status = std::system(("sh -c " + quote(cmd)).c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  }

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

TEST_P(Bank, CommandsExitZeroOnSuccessAndPrintWhatTheyDid) {
  auto r = bank({"open", "ada", "Ada Lovelace"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("opened account ada for Ada Lovelace"), std::string::npos) << r.out;
  r = bank({"deposit", "ada", "100"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = bank({"withdraw", "ada", "30"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("withdrew 30 from account ada"), std::string::npos) << r.out;
  r = bank({"balance", "ada"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "account-ada: owner Ada Lovelace, balance 70, open, version 3\n");
  // The mailer sent one message per event, each once.
  std::string mail = slurp(mail_);
  EXPECT_NE(mail.find("Subject: Welcome, Ada Lovelace"), std::string::npos) << mail;
  EXPECT_NE(mail.find("Subject: 100 deposited"), std::string::npos) << mail;
  EXPECT_NE(mail.find("Subject: 30 withdrawn"), std::string::npos) << mail;
}

TEST_P(Bank, DomainRejectionsExitThreeWithTheReasonOnStderr) {
  ASSERT_EQ(bank({"open", "bob", "Bob"}).code, 0);
  ASSERT_EQ(bank({"deposit", "bob", "20"}).code, 0);
  auto r = bank({"withdraw", "bob", "50"});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "bank: account bob cannot withdraw 50: the balance is 20\n");
  EXPECT_EQ(r.out, "");
  r = bank({"open", "bob", "Robert"});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "bank: account bob already exists\n");
  r = bank({"deposit", "nobody", "5"});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "bank: account nobody does not exist\n");
  r = bank({"close", "bob"});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "bank: account bob cannot be closed: the balance is 20, not 0\n");
  ASSERT_EQ(bank({"withdraw", "bob", "20"}).code, 0);
  ASSERT_EQ(bank({"close", "bob"}).code, 0);
  r = bank({"deposit", "bob", "1"});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "bank: account bob is closed\n");
  r = bank({"balance", "nobody"});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.err, "bank: account nobody does not exist\n");
  EXPECT_EQ(bank({"balance", "bob"}).out, "account-bob: owner Bob, balance 0, closed, version 4\n");
  EXPECT_EQ(events_in("account-bob"), 4u) << "a rejection writes nothing";
}

TEST_P(Bank, BadInputExitsTwoAndNamesWhatIsWrong) {
  ASSERT_EQ(bank({"open", "cy", "Cy"}).code, 0);
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"deposit", "cy", "ten"}, "AMOUNT 'ten' is not a whole number of units"},
           {{"deposit", "cy", "10.5"}, "AMOUNT '10.5' is not a whole number of units"},
           {{"deposit", "cy", "-5"}, "AMOUNT -5 is out of range"},
           {{"withdraw", "cy", "0"}, "AMOUNT 0 is out of range"},
           {{"deposit", "cy", "99999999999999999999"}, "AMOUNT '99999999999999999999' is not a whole number"},
           {{"deposit", "Cy-1", "5"}, "account id 'Cy-1' has 'C'; expected only a-z, 0-9 and _"},
           {{"open", "", "Nobody"}, "an account id must not be empty"},
           {{"balance", "a/b"}, "account id 'a/b' has '/'"},
           {{"deposit", "cy", "5", "--command-id", "not-a-uuid"}, "'not-a-uuid' is not a UUID"},
           {{"deposit", "cy"}, "AMOUNT is required"},
           {{"transfer-everything"}, "transfer-everything"},
       }) {
    auto r = bank(c.args);
    EXPECT_EQ(r.code, 2) << c.args[0] << ": " << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << "stderr: " << r.err;
  }
  EXPECT_EQ(events_in("account-cy"), 1u) << "bad input writes nothing";
}

TEST_P(Bank, ARepeatedCommandIdWritesOnce) {
  const std::string id = Uuid::v7().to_string();
  ASSERT_EQ(bank({"open", "dee", "Dee", "--command-id", Uuid::v7().to_string()}).code, 0);
  auto first = bank({"deposit", "dee", "40", "--command-id", id});
  ASSERT_EQ(first.code, 0) << first.err;
  auto second = bank({"deposit", "dee", "40", "--command-id", id});
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.out.find("a repeat of command " + id + ": nothing written"), std::string::npos) << second.out;
  EXPECT_EQ(events_in("account-dee"), 2u);
  EXPECT_EQ(bank({"balance", "dee"}).out, "account-dee: owner Dee, balance 40, open, version 2\n");
  // Without a command id, the same deposit is a new command.
  ASSERT_EQ(bank({"deposit", "dee", "40"}).code, 0);
  EXPECT_EQ(events_in("account-dee"), 3u);
  // The same id for a withdrawal after other writes: still the first result (the deposit), nothing new.
  auto reused = bank({"withdraw", "dee", "10", "--command-id", id});
  EXPECT_EQ(reused.code, 0) << reused.err;
  EXPECT_EQ(events_in("account-dee"), 3u);
  // A repeated open is a repeat, not "already exists".
  const std::string open_id = Uuid::v7().to_string();
  ASSERT_EQ(bank({"open", "eve", "Eve", "--command-id", open_id}).code, 0);
  auto again = bank({"open", "eve", "Eve", "--command-id", open_id});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(events_in("account-eve"), 1u);
  // The mail went out once per event, however often the commands were repeated.
  std::string mail = slurp(mail_);
  std::size_t deposits = 0;
  for (auto at = mail.find("Subject: 40 deposited"); at != std::string::npos;
       at = mail.find("Subject: 40 deposited", at + 1))
    ++deposits;
  EXPECT_EQ(deposits, 2u) << mail;
}

// Tellers as processes: deposits racing on one account are each written once (the losers' repositories
// decide again), the balances model sees every one though each process ran the projection itself, and
// each deposit is mailed once though each process tried to run the mailer.
TEST_P(Bank, TellersInManyProcessesOnOneAccountLoseNothingAndRepeatNothing) {
  ASSERT_EQ(bank({"open", "pat", "Pat"}).code, 0);
  constexpr int kTellers = 6;
  std::vector<Result> results(kTellers);
  {
    std::vector<std::thread> tellers;
    for (int i = 0; i < kTellers; ++i)
      tellers.emplace_back([&, i] { results[i] = bank({"deposit", "pat", std::to_string(i + 1)}); });
    for (auto& t : tellers) t.join();
  }
  for (const auto& r : results) ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(events_in("account-pat"), kTellers + 1u);
  EXPECT_EQ(bank({"balance", "pat"}).out, "account-pat: owner Pat, balance 21, open, version 7\n");
  ASSERT_EQ(bank({"deposit", "pat", "100"}).code, 0);  // its mailer catches up with any left unsent
  std::string mail = slurp(mail_);
  for (int i = 1; i <= kTellers; ++i) {
    std::string subject = "To: Pat\nSubject: " + std::to_string(i) + " deposited\n";
    auto first = mail.find(subject);
    EXPECT_NE(first, std::string::npos) << subject << mail;
    EXPECT_EQ(mail.find(subject, first + 1), std::string::npos) << "sent twice: " << subject;
  }
}

TEST_P(Bank, TheScenarioRunsAndEndsWithTheBalancesFromTheProjection) {
  // It refuses to wipe what the one-at-a-time commands wrote, unless told to with --fresh.
  ASSERT_EQ(bank({"open", "zed", "Zed"}).code, 0);
  auto refused = bank({});
  EXPECT_EQ(refused.code, 2) << refused.out;
  EXPECT_NE(refused.err.find("already holds events the scenario did not write (its last: position 1, stream "
                             "'account-zed', type 'AccountOpened')"),
            std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("Pass --fresh to delete them anyway"), std::string::npos) << refused.err;
  EXPECT_EQ(events_in("account-zed"), 1u) << "nothing wiped";
  // Then three runs: with --fresh over zed's account, then twice without flags over its own earlier run.
  for (int run = 0; run < 3; ++run) {
    auto r = run == 0 ? bank({"--fresh"}) : bank({});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("withdraw 80 from bob: rejected: account bob cannot withdraw 80: the balance is 50"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("the repository reloaded ada and decided again (attempts: 2)"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("transfer 5 from bob to ada: completed: 5 moved from bob to ada\n"
                         "  transfer 10 from ada to cy: compensated: the credit to cy was refused (account cy is "
                         "closed), 10 refunded to ada\n"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("account-ada: owner Ada, balance 15, open, version 7\n"
                         "account-bob: owner Bob, balance 45, open, version 3\n"
                         "account-cy: owner Cy, balance 0, closed, version 2\n"),
              std::string::npos)
        << r.out;
    EXPECT_EQ(r.out.find("account-zed"), std::string::npos) << "the store was not fresh";
    EXPECT_NE(r.out.find("E-mails the handler bank-mailer sent (12 in "), std::string::npos) << r.out;
  }
  // A command after the scenario: its store is no longer only the scenario's.
  ASSERT_EQ(bank({"deposit", "ada", "1"}).code, 0);
  refused = bank({});
  EXPECT_EQ(refused.code, 2);
  EXPECT_NE(refused.err.find("stream 'account-ada', type 'MoneyDeposited'"), std::string::npos) << refused.err;
  EXPECT_EQ(events_in("account-ada"), 8u) << "nothing wiped";
}

TEST_P(Bank, ACommandWhoseBalancesAreLateStillSucceedsAndSaysSo) {
  ASSERT_EQ(bank({"open", "ada", "Ada"}).code, 0);
  // No time at all for the balances: the deposit is written all the same.
  auto r = bank({"deposit", "ada", "25", "--wait-ms", "0"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("deposited 25 into account ada (version 2, position 2)"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("bank: the command is written (position 2), but the balances are not yet up to date: the "
                       "balances projection did not reach position 2 within 0 ms"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(events_in("account-ada"), 2u);
  r = bank({"balance", "ada"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "account-ada: owner Ada, balance 25, open, version 2\n") << "caught up later";
  r = bank({"deposit", "ada", "1", "--wait-ms", "-5"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("-5 is negative"), std::string::npos) << r.err;
  EXPECT_EQ(events_in("account-ada"), 2u);
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::string line_with(const std::string& text, const std::string& what) {
  auto at = text.find(what);
  if (at == std::string::npos) return "";
  auto begin = text.rfind('\n', at);
  begin = begin == std::string::npos ? 0 : begin + 1;
  return text.substr(begin, text.find('\n', at) - begin);
}

TEST_P(Bank, TheLibrarysProjectionCommandsListRebuildAndRefuseWhatCannotBeDone) {
  ASSERT_EQ(bank({"open", "ada", "Ada"}).code, 0);
  ASSERT_EQ(bank({"deposit", "ada", "40"}).code, 0);
  ASSERT_EQ(bank({"open", "bob", "Bob"}).code, 0);
  auto r = bank({"projections"});
  ASSERT_EQ(r.code, 0) << r.err;
  // One line per partition that has had events (ada's, bob's), each caught up with no errors.
  EXPECT_GE(count(r.out, R"("name":"balances")"), 1u) << r.out;
  EXPECT_EQ(count(r.out, R"("name":"balances")"), count(r.out, R"("errors":0)")) << r.out;
  EXPECT_EQ(count(r.out, R"("status":"failed")"), 0u) << r.out;
  for (auto field : {R"("partition":")", R"("head":3)", R"("lag":0)", R"("checkpoint":3)", R"("version":1)"}) {
    EXPECT_NE(r.out.find(field), std::string::npos) << field << " in " << r.out;
  }
  r = bank({"projection", "rebuild", "balances"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("rebuilt projection balances v1 through position"), std::string::npos) << r.out;
  r = bank({"balance", "ada"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "account-ada: owner Ada, balance 40, open, version 2\n") << "the rebuilt model";
  EXPECT_EQ(bank({"balance", "bob"}).out, "account-bob: owner Bob, balance 0, open, version 1\n");

  r = bank({"projection", "rebuild", "nope"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("no projection 'nope'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("balances"), std::string::npos) << "names the projections it has: " << r.err;
  r = bank({"projection", "retry", "balances", "4"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("partitions 0 to 3"), std::string::npos) << r.err;

  // An event the projection cannot apply stops its account's partition only.
  const std::string bad_stream = "account-zed";
  const auto bad = std::to_string(partition_for(bad_stream, 4));
  const auto good = std::to_string((partition_for(bad_stream, 4) + 1) % 4);
  r = bank({"projection", "retry", "balances", good});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("has not failed"), std::string::npos) << r.err;
  {
    auto store = harness_->open();
    store->append(bad_stream, ExpectedVersion::any(), {{.type = "MoneyDeposited", .data = R"({"amount":"lots"})"}});
  }
  r = bank({"balance", "ada"});
  EXPECT_EQ(r.code, 1) << "the model cannot catch up with the head: " << r.out;
  EXPECT_NE(r.err.find("partition " + bad + " stopped"), std::string::npos) << r.err;
  r = bank({"projections"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(count(r.out, R"("status":"failed")"), 1u) << r.out;
  const std::string failed = line_with(r.out, R"("status":"failed")");
  EXPECT_NE(failed.find(R"("partition":")" + bad + "\""), std::string::npos) << failed;
  EXPECT_NE(failed.find(R"("errors":1)"), std::string::npos) << failed;
  EXPECT_NE(failed.find("stream 'account-zed', type 'MoneyDeposited'"), std::string::npos) << failed;
  r = bank({"projection", "retry", "balances", bad});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("goes back to work"), std::string::npos) << r.out;
  EXPECT_EQ(bank({"balance", "ada"}).code, 1) << "the event still cannot be applied";
  r = bank({"projection", "skip", "balances", bad});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("skipped position"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stream 'account-zed', type 'MoneyDeposited'"), std::string::npos) << r.out;
  r = bank({"balance", "ada"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "account-ada: owner Ada, balance 40, open, version 2\n");
  r = bank({"projections"});
  EXPECT_EQ(count(r.out, R"("errors":0)"), count(r.out, R"("name":"balances")")) << r.out;
  EXPECT_EQ(count(r.out, R"("status":"failed")"), 0u) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Engines, Bank, ::testing::ValuesIn(sql_engines()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sourced::testing
