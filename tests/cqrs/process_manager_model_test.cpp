// Model-based random test of ProcessManager: random account operations and transfers, events handed to
// the transfer process manager as a persistent subscription would (in order, at least once), with crashes
// injected into the store at random appends (before the write, or after it with the caller never
// hearing back). After a crash everything in memory is rebuilt and delivery resumes from a random point
// at or after the last "saved checkpoint". A pure model runs the same operations without a store or
// crashes. The store must end as the model: the same events in the same `$all` order (every command
// dispatched exactly once in effect), and every instance's state, running or stopped, as the model's.

#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cqrs/faulty_store.hpp"
#include "cqrs/transfer_app.hpp"
#include "sourced/memory_store.hpp"

namespace sourced {
namespace {

using namespace testing::bank;
using testing::Crash;
using testing::FaultyStore;

// The model: streams of typed events and the process manager's instances, no store, no crashes.
class Model {
 public:
  struct Entry {
    std::string stream;
    std::string type;
    std::string data;
    Uuid correlation;
    std::optional<TransferProcess::Event> pm_event;
  };
  struct Instance {
    bool running = false;
    TransferProcess::State state;
  };

  // Dispatches a command as the bus and repositories would; the rejection when refused.
  std::optional<Rejection> dispatch(const TransferProcess::Command& command, const Uuid& correlation) {
    return std::visit([&](const auto& c) { return dispatch_one(c, correlation); }, command);
  }
  template <class C>
  std::optional<Rejection> dispatch_one(const C& c, const Uuid& correlation) {
    if constexpr (DeciderFor<Account, C>) {
      auto d = Account::decide(c, fold(Account{}, Account::initial_state(), accounts_[c.stream()]));
      if (d.rejected()) return d.rejection();
      for (const auto& e : d.events()) {
        accounts_[c.stream()].push_back(e);
        EventData data = events().encode(e);
        std::optional<TransferProcess::Event> pm;
        if (auto* x = std::get_if<Deposited>(&e)) pm = *x;
        if (auto* x = std::get_if<Withdrawn>(&e)) pm = *x;
        log_.push_back({c.stream(), data.type, data.data, correlation, pm});
      }
    } else {
      auto d = Transfer::decide(c, fold(Transfer{}, Transfer::initial_state(), transfers_[c.stream()]));
      if (d.rejected()) return d.rejection();
      for (const auto& e : d.events()) {
        transfers_[c.stream()].push_back(e);
        EventData data = transfer_events().encode(e);
        TransferProcess::Event pm = std::visit([](const auto& x) { return TransferProcess::Event(x); }, e);
        log_.push_back({c.stream(), data.type, data.data, correlation, pm});
      }
    }
    return std::nullopt;
  }

  // The process manager handles every event not handled yet, in log order.
  void process() {
    for (; next_ < log_.size(); ++next_) {
      Entry entry = log_[next_];
      if (!entry.pm_event) continue;
      const auto& event = *entry.pm_event;
      ProcessRoute route = TransferProcess::route(event);
      std::string key = entry.correlation.to_string();
      Instance& instance = instances_[key];
      if (route.action == ProcessRoute::Action::stop) {
        instance.running = false;
        continue;
      }
      if (route.action == ProcessRoute::Action::proceed && !instance.running) continue;
      if (!instance.running) instance = {true, TransferProcess::initial_state()};
      std::vector<TransferProcess::Command> commands = TransferProcess::handle(instance.state, event);
      instance.state = TransferProcess::apply(instance.state, event);
      for (std::size_t i = 0; i < commands.size(); ++i) {
        auto command = commands[i];
        if (auto r = dispatch(command, entry.correlation)) {
          for (auto& more : TransferProcess::on_rejected(instance.state, command, *r)) commands.push_back(more);
        }
      }
    }
    // Instances the log never started are not instances.
    std::erase_if(instances_,
                  [](const auto& kv) { return !kv.second.running && kv.second.state == TransferProcess::State{}; });
  }

  const std::vector<Entry>& log() const { return log_; }
  const std::map<std::string, Instance>& instances() const { return instances_; }

 private:
  std::map<std::string, std::vector<Account::Event>> accounts_;
  std::map<std::string, std::vector<Transfer::Event>> transfers_;
  std::vector<Entry> log_;
  std::size_t next_ = 0;
  std::map<std::string, Instance> instances_;
};

Uuid random_uuid(std::mt19937_64& rng) {
  Uuid::Bytes b;
  for (auto& x : b) x = static_cast<std::uint8_t>(rng());
  b[6] = static_cast<std::uint8_t>(0x40 | (b[6] & 0x0F));
  b[8] = static_cast<std::uint8_t>(0x80 | (b[8] & 0x3F));
  return Uuid(b);
}

struct Totals {
  int crashes = 0;
  int transfers = 0;
  int stopped = 0;
  int rejected_dispatches = 0;
};

void run_seed(std::uint64_t seed, Totals& totals) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(std::uniform_int_distribution<int>(0, n - 1)(rng)); };
  auto store = open_memory_store();
  TransferApp users(*store);  // user commands: never crash
  FaultyStore faulty(*store, rng);
  std::optional<TransferApp> pm;  // the process manager's process: crashes and is rebuilt
  pm.emplace(faulty);
  Model model;
  Position delivered;  // the last event handed to the process manager and handled
  Position saved;      // the checkpoint as last saved: a crash resumes at or after it
  int transfers = 0;
  const std::vector<std::string> names = {"a", "b", "c", "d"};

  auto process = [&] {
    faulty.fail_before = 0.08;
    faulty.fail_after = 0.08;
    for (int guard = 0; guard < 100000; ++guard) {
      ReadAllOptions from;
      from.from = Position(delivered.value() + 1);
      from.max_count = 8;
      std::vector<RecordedEvent> batch = store->read_all(from).to_vector();
      if (batch.empty()) break;
      for (const auto& e : batch) {
        try {
          pm->manager.handle(e);
        } catch (const Crash&) {
          // Everything in memory is lost; delivery resumes at the saved checkpoint or anywhere after it
          // up to the event in progress (a save may have landed after the last we know of).
          auto back = std::uniform_int_distribution<std::uint64_t>(saved.value(), delivered.value())(rng);
          delivered = saved = Position(back);
          pm.reset();
          pm.emplace(faulty);
          break;
        }
        delivered = e.position;
        if (pick(3) == 0) saved = delivered;
      }
    }
    faulty.fail_before = faulty.fail_after = 0;
    model.process();
  };

  for (int step = 0; step < 60; ++step) {
    int op = pick(10);
    std::string a = names[pick(4)], b = names[pick(4)];
    Uuid id = random_uuid(rng);
    CommandMeta meta{.command_id = id};
    std::optional<Rejection> expected;
    CommandResult got;
    if (op == 0) {
      expected = model.dispatch_one(Open{a, "owner " + a}, id);
      got = users.bus.dispatch(Open{a, "owner " + a}, meta);
    } else if (op <= 2) {
      long amount = 1 + pick(50);
      expected = model.dispatch_one(Deposit{a, amount}, id);
      got = users.bus.dispatch(Deposit{a, amount}, meta);
    } else if (op == 3 && pick(3) == 0) {
      expected = model.dispatch_one(Close{a}, id);
      got = users.bus.dispatch(Close{a}, meta);
    } else if (op <= 6) {
      if (a == b) continue;
      std::string t = "t" + std::to_string(transfers++);
      long amount = 1 + pick(40);
      expected = model.dispatch_one(RequestTransfer{t, a, b, amount}, id);
      got = users.bus.dispatch(RequestTransfer{t, a, b, amount}, meta);
    } else {
      process();
      continue;
    }
    ASSERT_EQ(got.rejected(), expected.has_value()) << "step " << step;
  }
  process();

  // The events the application sees: the same, in the same order, as the model's.
  std::vector<std::string> stored, modelled;
  for (const auto& e : store->read_all().to_vector()) {
    if (e.stream.starts_with("process-")) continue;
    stored.push_back(e.stream + " " + e.type + " " + e.data + " " + e.correlation_id.value_or(Uuid()).to_string());
  }
  for (const auto& e : model.log()) {
    modelled.push_back(e.stream + " " + e.type + " " + e.data + " " + e.correlation.to_string());
  }
  ASSERT_EQ(stored, modelled) << "after " << faulty.crashes << " crashes";
  totals.crashes += faulty.crashes;
  totals.transfers += transfers;
  for (const auto& e : store->read_all().to_vector()) {
    if (e.type == "$process-stopped") ++totals.stopped;
    if (e.type == "$process-rejected") ++totals.rejected_dispatches;
  }
  // Every instance as the model says.
  for (const auto& [key, instance] : model.instances()) {
    SCOPED_TRACE("instance " + key);
    auto state = pm->manager.instance(key);
    EXPECT_EQ(state.has_value(), instance.running);
    if (state && instance.running) EXPECT_EQ(*state, instance.state);
    EXPECT_EQ(pm->manager.stopped(key), !instance.running);
  }
}

TEST(ProcessManagerModel, RandomTransfersWithCrashesEndAsTheModel) {
  const std::uint64_t seeds = 1000;
  Totals totals;
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    run_seed(seed, totals);
    if (::testing::Test::HasFatalFailure() || ::testing::Test::HasNonfatalFailure()) return;
  }
  // The test means something only if crashes, stops and rejections happened.
  EXPECT_GT(totals.crashes, 1000);
  EXPECT_GT(totals.stopped, 1000);
  EXPECT_GT(totals.rejected_dispatches, 100);
  std::cout << "[ info ] " << seeds << " seeds: " << totals.transfers << " transfers, " << totals.stopped
            << " instances stopped, " << totals.rejected_dispatches << " rejections recorded, " << totals.crashes
            << " crashes\n";
}

}  // namespace
}  // namespace sourced
