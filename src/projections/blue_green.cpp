#include "sourced/blue_green.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "sourced/error.hpp"

namespace sourced {
namespace {
using std::chrono::milliseconds;

// The active version is read from the store at most this often: another process may switch.
constexpr milliseconds kActiveCheck(500);

// One version's runner, whole (ProjectionRunner) or partitioned (PartitionedProjectionRunner): what the
// orchestration needs of it. Thread-safe as the runners are.
class VersionRunner {
 public:
  virtual ~VersionRunner() = default;
  virtual void stop() = 0;
  virtual bool running() const = 0;
  // Has reached the head (every partition's coordinator: the partitions then catch up in wait_for) and follows.
  virtual bool live() const = 0;
  virtual WaitResult wait_for(Position position, milliseconds timeout) const = 0;
  virtual ProjectionProgress progress() const = 0;
  virtual std::exception_ptr error() const = 0;
};

class WholeVersion final : public VersionRunner {
 public:
  WholeVersion(EventStore& events, ProjectionStore& models, detail::ErasedProjection p, ProjectionRunnerOptions o)
      : runner_(events, models, std::move(p), std::move(o)) {}
  void stop() override { runner_.stop(); }
  bool running() const override { return runner_.running(); }
  bool live() const override {
    auto p = runner_.progress();
    return p.live && p.status == ProjectionStatus::following;
  }
  WaitResult wait_for(Position position, milliseconds timeout) const override {
    return runner_.wait_for(position, timeout);
  }
  ProjectionProgress progress() const override { return runner_.progress(); }
  std::exception_ptr error() const override { return runner_.error(); }

 private:
  ProjectionRunner runner_;
};

class PartitionedVersion final : public VersionRunner {
 public:
  PartitionedVersion(EventStore& events, ProjectionStore& models, detail::ErasedProjection p,
                     PartitionedRunnerOptions o)
      : runner_(events, models, std::move(p), std::move(o)) {}
  void stop() override { runner_.stop(); }
  bool running() const override { return runner_.running(); }
  bool live() const override {
    auto p = runner_.progress().total;
    return p.live && p.status == ProjectionStatus::following;
  }
  WaitResult wait_for(Position position, milliseconds timeout) const override {
    return runner_.wait_for(position, timeout);
  }
  ProjectionProgress progress() const override { return runner_.progress().total; }
  std::exception_ptr error() const override { return runner_.error(); }

 private:
  PartitionedProjectionRunner runner_;
};
}  // namespace

// A control thread beside the runners: it never touches a batch, only starts and stops whole runners and
// runs the switch in a transaction of its own (docs/projections.md, "Blue/green").
class BlueGreenRunner::Impl {
 public:
  Impl(EventStore& events, ProjectionStore& models, std::vector<detail::ErasedProjection> versions,
       BlueGreenOptions options)
      : events_(events), models_(models), o_(std::move(options)) {
    if (versions.empty()) throw InvalidArgument("blue/green needs at least one projection version");
    if (o_.tables.empty()) {
      throw InvalidArgument(
          fmt::format("blue/green projection '{}': no tables to switch (options.tables)", versions.front().key.name));
    }
    name_ = versions.front().key.name;
    for (auto& v : versions) {
      if (v.key.name != name_) {
        throw InvalidArgument(
            fmt::format("blue/green versions of one projection: got '{}' and '{}'", name_, v.key.name));
      }
      std::uint32_t version = v.key.version;
      if (!versions_.emplace(version, std::move(v)).second) {
        throw InvalidArgument(fmt::format("blue/green projection '{}': version {} given twice", name_, version));
      }
    }
    target_ = versions_.rbegin()->first;
    o_.runner.start = StartMode::resume;
    if (!o_.runner.log) o_.runner.log = [](std::string_view line) { fmt::print(stderr, "{}\n", line); };
    if (o_.partitioned) {
      o_.partitioned->start = StartMode::resume;
      o_.partitioned->stop_when_caught_up = false;
      if (!o_.partitioned->log) o_.partitioned->log = o_.runner.log;
    }
    active_ = models_.active_version(name_);
    if (active_ && *active_ > target_) {
      throw InvalidArgument(fmt::format(
          "projection '{}': version {} is active, newer than version {} given to run; a version goes forward only",
          name_, *active_, target_));
    }
    switched_ = active_ == target_;
    if (switched_) {
      drop_retired_tables();
    } else if (active_) {
      if (versions_.count(*active_) > 0) {
        old_ = make_runner(*active_);
      } else {
        o_.runner.log(
            fmt::format("sourced: projection {}: version {} is active but not given here: its tables serve as they are "
                        "until version {} is switched in",
                        name_, *active_, target_));
      }
    }
    target_runner_ = make_runner(target_);
    thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }

  void stop() {
    // Two threads may call stop() at once: only one may join.
    std::lock_guard stopping(stop_mu_);
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
    std::shared_ptr<VersionRunner> old, target;
    {
      std::lock_guard lock(mu_);
      old = old_;
      target = target_runner_;
    }
    if (old) old->stop();
    if (target) target->stop();
    std::lock_guard lock(mu_);
    running_ = false;
    cv_.notify_all();
  }

  std::uint32_t target_version() const { return target_; }

  std::optional<std::uint32_t> active_version() const {
    std::lock_guard lock(mu_);
    return active_;
  }

  bool wait_until_switched(milliseconds timeout) const {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return switched_ || !running_ || failed_; });
    return switched_;
  }

  WaitResult wait_for(Position position, milliseconds timeout) const {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto runner = serving();
      auto left = std::chrono::ceil<milliseconds>(deadline - std::chrono::steady_clock::now());
      auto r = runner->wait_for(position, std::max(left, milliseconds(0)));
      if (r != WaitResult::stopped) return r;
      // The old version's runner stops at the switch: wait for the switch to end (it commits, or restarts
      // the old runner), then go on with whichever version serves.
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, deadline, [&] { return !switching_; });
      if (serving_locked() == runner) return switching_ ? WaitResult::timeout : r;
    }
  }

  ProjectionProgress progress() const { return serving_after_switch()->progress(); }

  std::exception_ptr error() const {
    std::lock_guard lock(mu_);
    return target_runner_->error();
  }

 private:
  std::shared_ptr<VersionRunner> serving() const {
    std::lock_guard lock(mu_);
    return serving_locked();
  }
  std::shared_ptr<VersionRunner> serving_locked() const { return switched_ || !old_ ? target_runner_ : old_; }
  std::shared_ptr<VersionRunner> serving_after_switch() const {
    std::lock_guard lock(mu_);
    return target_runner_;
  }

  void run(std::stop_token stop) {
    auto last_check = std::chrono::steady_clock::now();
    while (!stop.stop_requested()) {
      try {
        auto now = std::chrono::steady_clock::now();
        if (now - last_check >= kActiveCheck) {
          last_check = now;
          if (!check_active()) return;
        }
        if (!switched_) {
          if (!target_runner_->running()) {
            std::lock_guard lock(mu_);
            failed_ = true;
            cv_.notify_all();
            return;
          }
          if (target_runner_->live()) {
            // Live means it reached the head once; first let it reach the head read now (the old version
            // goes on serving meanwhile), then switch.
            auto head = events_.head_position();
            if (target_runner_->wait_for(head, o_.catch_up_timeout) == WaitResult::reached) switch_now();
          }
        } else if (pending_drop_ && std::chrono::steady_clock::now() >= drop_at_) {
          drop_tables(*pending_drop_);
          pending_drop_.reset();
        }
      } catch (const std::exception& e) {
        o_.runner.log(fmt::format("sourced: projection {}: blue/green switch to version {}: {}; trying again", name_,
                                  target_, e.what()));
      }
      std::mutex m;
      std::unique_lock lock(m);
      std::condition_variable_any cv;
      cv.wait_for(lock, stop, o_.poll, [] { return false; });
    }
  }

  // What another process did: switched to this target (nothing left to do here but follow), or to a
  // newer version (this one retires). False when this runner is done.
  bool check_active() {
    auto active = models_.active_version(name_);
    if (!active || active == active_) return true;
    if (*active == target_) {
      if (old_) old_->stop();
      std::lock_guard lock(mu_);
      active_ = active;
      switched_ = true;
      cv_.notify_all();
      return true;
    }
    if (*active > target_) {
      o_.runner.log(fmt::format("sourced: projection {}: version {} was switched in elsewhere; version {} retires",
                                name_, *active, target_));
      if (old_) old_->stop();
      target_runner_->stop();
      mark_retired(target_);
      std::lock_guard lock(mu_);
      active_ = active;
      running_ = false;
      cv_.notify_all();
      return false;
    }
    return true;
  }

  std::shared_ptr<VersionRunner> make_runner(std::uint32_t version) {
    if (o_.partitioned) {
      return std::make_shared<PartitionedVersion>(events_, models_, versions_.at(version), *o_.partitioned);
    }
    return std::make_shared<WholeVersion>(events_, models_, versions_.at(version), o_.runner);
  }

  // Every state row of `version`: partition '' of a whole projection, "0" ... "N-1" of a partitioned one.
  std::vector<ProjectionState> rows_of(std::uint32_t version) {
    std::vector<ProjectionState> out;
    for (auto& s : models_.list_states()) {
      if (s.key.name == name_ && s.key.version == version) out.push_back(std::move(s));
    }
    return out;
  }

  // This process's runners of `version` are stopped; other processes' stop at their next commit (the fence
  // refuses a retired row) or when they notice the switch.
  void mark_retired(std::uint32_t version) {
    auto rows = rows_of(version);
    if (rows.empty()) return;
    auto tx = models_.begin_transaction();
    for (auto& row : rows) {
      row.status = ProjectionStatus::retired;
      tx->save_state(row);
    }
    tx->commit();
  }

  // Stops the old version, lets the target reach everything the old one committed (it may have gone past
  // the head the caller read: readers must never see the model go back), then switches in one transaction
  // that also retires every state row of the old version, each fenced on the checkpoint the target was
  // checked against: when a runner of the old version in another process committed meanwhile, the
  // transaction is dropped and the target catches up with that too, until `catch_up_timeout`. When the
  // target does not get there in time, or the transaction fails, the old version is restarted and serves
  // on until the next try.
  void switch_now() {
    auto old = active_;
    set_switching(true);
    struct EndSwitch {
      Impl* self;
      ~EndSwitch() { self->set_switching(false); }
    } end_switch{this};
    if (old_) old_->stop();
    try {
      auto deadline = std::chrono::steady_clock::now() + o_.catch_up_timeout;
      for (;;) {
        std::vector<ProjectionState> old_rows;
        if (old) old_rows = rows_of(*old);
        std::erase_if(old_rows, [](const auto& r) { return r.status == ProjectionStatus::retired; });
        Position shown;
        for (const auto& r : old_rows) shown = std::max(shown, r.checkpoint);
        auto left = std::chrono::ceil<milliseconds>(deadline - std::chrono::steady_clock::now());
        if (target_runner_->wait_for(shown, std::max(left, milliseconds(0))) != WaitResult::reached) {
          throw std::runtime_error(
              fmt::format("version {} has not reached position {} that version {} showed within {} ms", target_,
                          shown.value(), old.value_or(0), o_.catch_up_timeout.count()));
        }
        auto tx = models_.begin_transaction();
        tx->set_projection(versions_.at(target_).key);
        for (const auto& t : o_.tables) tx->show_table_as(t, versioned_table(t, target_));
        tx->save_active_version(name_, target_);
        bool fenced = true;
        auto at = Timestamp(std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now()));
        for (auto row : old_rows) {
          auto checked = row.checkpoint;
          row.status = ProjectionStatus::retired;
          row.updated_at = at;
          if (!tx->save_state_if(row, checked)) {
            fenced = false;
            break;
          }
        }
        if (fenced) {
          tx->commit();
          break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
          throw std::runtime_error(fmt::format(
              "version {} kept committing elsewhere (another process runs it) for {} ms; the switch waits for it to stop",
              old.value_or(0), o_.catch_up_timeout.count()));
        }
      }
    } catch (...) {
      if (old_) {
        auto restarted = make_runner(*old);
        std::lock_guard lock(mu_);
        old_ = std::move(restarted);
      }
      throw;
    }
    {
      std::lock_guard lock(mu_);
      active_ = target_;
      switched_ = true;
      cv_.notify_all();
    }
    o_.runner.log(fmt::format("sourced: projection {}: version {} switched in{}", name_, target_,
                              old ? fmt::format(" (version {} retired)", *old) : std::string()));
    // Other processes still running the old version notice the switch within kActiveCheck and stop: the
    // old tables go after that, so their last batches do not fail on missing tables. A drop that fails is
    // tried again at the next poll; one that never ran (stop, crash) runs at the next start.
    if (old && o_.drop_old_tables) {
      pending_drop_ = *old;
      drop_at_ = std::chrono::steady_clock::now() + 2 * kActiveCheck;
    }
  }

  void set_switching(bool on) {
    std::lock_guard lock(mu_);
    switching_ = on;
    cv_.notify_all();
  }

  void drop_tables(std::uint32_t version) {
    auto tx = models_.begin_transaction();
    for (const auto& t : o_.tables) tx->drop_table(versioned_table(t, version));
    tx->commit();
  }

  // A crash between the switch and the drop leaves the old tables: they go at the next start.
  void drop_retired_tables() {
    if (!o_.drop_old_tables) return;
    std::set<std::uint32_t> retired;
    for (const auto& s : models_.list_states()) {
      if (s.key.name == name_ && s.key.version < target_ && s.status == ProjectionStatus::retired) {
        retired.insert(s.key.version);
      }
    }
    for (auto version : retired) drop_tables(version);
  }

  EventStore& events_;
  ProjectionStore& models_;
  BlueGreenOptions o_;
  std::string name_;
  std::map<std::uint32_t, detail::ErasedProjection> versions_;
  std::uint32_t target_ = 0;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::optional<std::uint32_t> active_;
  bool switched_ = false;
  bool running_ = true;
  bool failed_ = false;
  bool switching_ = false;                     // switch_now() runs: the old runner may be stopped for it
  std::optional<std::uint32_t> pending_drop_;  // control thread only
  std::chrono::steady_clock::time_point drop_at_;
  std::mutex stop_mu_;
  std::shared_ptr<VersionRunner> old_;
  std::shared_ptr<VersionRunner> target_runner_;

  std::jthread thread_;  // last: stopped before the rest goes
};

BlueGreenRunner::BlueGreenRunner(EventStore& events, ProjectionStore& models,
                                 std::vector<detail::ErasedProjection> versions, BlueGreenOptions options)
    : impl_(std::make_shared<Impl>(events, models, std::move(versions), std::move(options))) {}

BlueGreenRunner::~BlueGreenRunner() { stop(); }

void BlueGreenRunner::stop() { impl_->stop(); }
std::uint32_t BlueGreenRunner::target_version() const { return impl_->target_version(); }
std::optional<std::uint32_t> BlueGreenRunner::active_version() const { return impl_->active_version(); }
bool BlueGreenRunner::wait_until_switched(std::chrono::milliseconds timeout) const {
  return impl_->wait_until_switched(timeout);
}
WaitResult BlueGreenRunner::wait_for(Position position, std::chrono::milliseconds timeout) const {
  return impl_->wait_for(position, timeout);
}
std::function<bool(Position, std::chrono::milliseconds)> BlueGreenRunner::waiter() const {
  return [impl = impl_](Position position, std::chrono::milliseconds timeout) {
    return impl->wait_for(position, timeout) == WaitResult::reached;
  };
}
ProjectionProgress BlueGreenRunner::progress() const { return impl_->progress(); }
std::exception_ptr BlueGreenRunner::error() const { return impl_->error(); }

}  // namespace sourced
