// A model-based random test of the runner's checkpoint / batch / retry state machine: random appends,
// starts (resume or rebuild) with random batch settings, handler failures, commit failures, stops and
// "crashes" (every write failing while the runner stops, so its last batch is lost), against the model
// every time: the read model is exactly the fold of the events up to the saved checkpoint, and once the
// runner reports the head as processed, of every event.

#include <random>

#include <gtest/gtest.h>

#include "projections/harness.hpp"

namespace sourced::testing {
namespace {

using namespace std::chrono_literals;

// A memory read-model store whose commits fail at random (before anything is applied).
class FaultyStore;
class FaultyTransaction final : public ProjectionTransaction {
 public:
  FaultyTransaction(FaultyStore& store, std::unique_ptr<ProjectionTransaction> inner)
      : store_(store), inner_(std::move(inner)) {}
  MemoryProjectionTransaction& inner() { return static_cast<MemoryProjectionTransaction&>(*inner_); }
  void save_state(const ProjectionState& s) override { inner_->save_state(s); }
  bool save_state_if(const ProjectionState& s, Position expected) override {
    return inner_->save_state_if(s, expected);
  }
  void commit() override;

 private:
  FaultyStore& store_;
  std::unique_ptr<ProjectionTransaction> inner_;
};

class FaultyStore final : public ProjectionStore {
 public:
  using Transaction = FaultyTransaction;
  explicit FaultyStore(std::uint64_t seed) : rng_(seed) {}
  std::unique_ptr<ProjectionTransaction> begin_transaction() override {
    return std::make_unique<FaultyTransaction>(*this, inner_.begin_transaction());
  }
  std::optional<ProjectionState> load_state(const ProjectionKey& k) override { return inner_.load_state(k); }
  std::vector<ProjectionState> list_states() override { return inner_.list_states(); }
  bool should_fail() {
    std::lock_guard lock(mu_);
    return std::bernoulli_distribution(commit_failure)(rng_);
  }
  MemoryProjectionStore inner_;
  std::atomic<double> commit_failure{0};

 private:
  std::mutex mu_;
  std::mt19937_64 rng_;
};

void FaultyTransaction::commit() {
  if (store_.should_fail()) throw StorageError("injected commit failure", true);
  inner_->commit();
}

class RunnerModel : public ::testing::TestWithParam<int> {};

TEST_P(RunnerModel, TheModelIsAlwaysTheFoldOfTheEventsUpToTheCheckpoint) {
  const std::uint64_t seed = 1000 + GetParam();
  std::mt19937_64 rng(seed);
  auto events = open_memory_store();
  FaultyStore models(seed);
  std::atomic<double> handler_failure{0};
  std::mutex handler_mu;
  std::mt19937_64 handler_rng(seed * 7);
  const std::string table = "rows";

  auto projection = [&] {
    Projection<FaultyTransaction> p;
    p.name = "model";
    p.handle = [&](FaultyTransaction& tx, const RecordedEvent& e) {
      {
        std::lock_guard lock(handler_mu);
        if (std::bernoulli_distribution(handler_failure)(handler_rng)) throw std::runtime_error("injected");
      }
      std::int64_t n = 0, sum = 0;
      if (auto v = tx.inner().get(table, e.stream)) std::sscanf(v->c_str(), "%ld/%ld", &n, &sum);
      tx.inner().put(table, e.stream,
                     row_text(n + 1, sum + static_cast<std::int64_t>(e.position.value()),
                              static_cast<std::int64_t>(e.position.value())));
    };
    p.clear = [&](FaultyTransaction& tx) { tx.inner().clear(table); };
    return p;
  };
  auto model = [&] {
    Model m;
    for (auto& [k, v] : models.inner_.table(table)) m[k] = v;
    return m;
  };
  auto check_checkpoint = [&](const std::string& when) {
    auto state = models.load_state({"model", 1, ""});
    std::uint64_t c = state ? state->checkpoint.value() : 0;
    ASSERT_EQ(model(), fold(*events, std::nullopt, c)) << "seed " << seed << ", " << when << ", checkpoint " << c;
  };

  std::unique_ptr<ProjectionRunner> runner;
  auto start = [&](StartMode mode) {
    ProjectionRunnerOptions o;
    o.start = mode;
    o.batch_events = std::array<std::size_t, 4>{1, 3, 10, 100}[rng() % 4];
    o.batch_interval = std::array<std::chrono::milliseconds, 3>{0ms, 2ms, 50ms}[rng() % 3];
    o.retry_initial = 0ms;  // retry at once: the test is about what is applied, not when
    o.progress = ProgressDisplay::none;
    o.log = [](std::string_view) {};
    runner = std::make_unique<ProjectionRunner>(*events, models, projection(), o);
  };

  for (int step = 0; step < 60; ++step) {
    int op = static_cast<int>(rng() % 10);
    std::string what = "step " + std::to_string(step) + " op " + std::to_string(op);
    if (op <= 3) {  // append
      int n = 1 + static_cast<int>(rng() % 40);
      std::vector<EventData> batch;
      for (int i = 0; i < n; ++i) batch.push_back(event("E"));
      events->append("s-" + std::to_string(rng() % 7), ExpectedVersion::any(), batch);
    } else if (op == 4) {  // failure rates
      handler_failure = std::array<double, 3>{0, 0.02, 0.2}[rng() % 3];
      models.commit_failure = std::array<double, 3>{0, 0.05, 0.3}[rng() % 3];
    } else if (op == 5 || op == 6) {  // start or restart
      runner.reset();
      check_checkpoint(what + " after stop");
      start(rng() % 5 == 0 ? StartMode::rebuild : StartMode::resume);
    } else if (op == 7 && runner) {  // a crash: the last batch and the stop's commit are lost
      double before = models.commit_failure;
      models.commit_failure = 1;
      runner.reset();
      models.commit_failure = before;
      check_checkpoint(what + " after crash");
    } else if (runner) {  // the runner catches up with the head
      auto head = events->head_position();
      double hf = handler_failure, cf = models.commit_failure;
      handler_failure = std::min(hf, 0.02);  // it must get through eventually
      models.commit_failure = std::min(cf, 0.05);
      ASSERT_EQ(runner->wait_for(head, 30s), WaitResult::reached) << "seed " << seed << ", " << what;
      EXPECT_EQ(model(), fold(*events)) << "seed " << seed << ", " << what;
      handler_failure = hf;
      models.commit_failure = cf;
    }
  }
  runner.reset();
  check_checkpoint("at the end");
}

INSTANTIATE_TEST_SUITE_P(Seeds, RunnerModel, ::testing::Range(0, 40));

}  // namespace
}  // namespace sourced::testing
