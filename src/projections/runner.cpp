#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <unistd.h>

#include "sourced/error.hpp"
#include "sourced/projection.hpp"
#include "sourced/subscription.hpp"

namespace sourced {
namespace {
using std::chrono::milliseconds;

// How long the runner waits for a message before it looks at its stop request and its progress again.
constexpr milliseconds kStopCheck(50);
constexpr milliseconds kHeadRefresh(250);
constexpr milliseconds kBarRefresh(200);
constexpr auto kRateWindow = std::chrono::seconds(5);

std::string describe(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

std::string with_commas(std::uint64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

// Thrown by a commit whose fence refused: another runner of this key committed since this one's checkpoint,
// so the batch is applied there already. Not a failure: the runner rolls back and goes on from there.
struct CheckpointMoved {};

std::string duration_text(std::chrono::seconds s) {
  auto n = s.count();
  if (n >= 3600) return fmt::format("{}h{:02}m", n / 3600, n / 60 % 60);
  if (n >= 60) return fmt::format("{}m{:02}s", n / 60, n % 60);
  return fmt::format("{}s", n);
}
}  // namespace

// The state machine (docs/projections.md): a batch is the events applied since the last commit, all in
// one transaction of the read-model store (`tx_`); a commit saves the checkpoint in that transaction.
// A failure anywhere drops the transaction (rolled back), records the error in a transaction of its own,
// and either stops or waits and starts again from `committed_` with a new subscription: what was rolled
// back is read again, what was committed is not.
class ProjectionRunner::Impl {
 public:
  Impl(EventStore& events, ProjectionStore& models, detail::ErasedProjection p, ProjectionRunnerOptions o)
      : events_(events),
        models_(models),
        p_(std::move(p)),
        o_(std::move(o)),
        clock_(o_.clock ? *o_.clock : Clock::steady()) {
    if (p_.key.name.empty()) throw InvalidArgument("a projection needs a name");
    if (!p_.handle) throw InvalidArgument(fmt::format("projection '{}' has no handler", p_.key.name));
    if (o_.start == StartMode::rebuild && !p_.clear) {
      throw InvalidArgument(fmt::format("projection '{}' cannot be rebuilt: it has no clear hook", p_.key.name));
    }
    if (p_.filter) events_.read_all({.max_count = 0, .filter = p_.filter});  // checks it
    if (o_.batch_events == 0) o_.batch_events = 1;
    if (!o_.progress_stream) o_.progress_stream = stderr;
    if (!o_.log) {
      o_.log = [](std::string_view line) { fmt::print(stderr, "{}\n", line); };
    }
    bar_ = o_.progress == ProgressDisplay::bar ||
           (o_.progress == ProgressDisplay::automatic && ::isatty(::fileno(o_.progress_stream)) == 1);
  }

  void start() {
    thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }

  void stop() {
    thread_.request_stop();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  }

  bool running() const {
    std::lock_guard lock(mu_);
    return running_;
  }

  bool wait_until_stopped(milliseconds timeout) const {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return !running_; });
  }

  std::exception_ptr error() const {
    std::lock_guard lock(mu_);
    return error_;
  }

  ProjectionProgress progress() const {
    std::lock_guard lock(mu_);
    return shown_;
  }

  WaitResult wait_for(Position position, milliseconds timeout) const {
    std::unique_lock lock(mu_);
    if (shown_.position < position && running_) {
      // Told to the runner, which commits its open batch soon after it has applied this position (see
      // awaited()).
      auto it = waiting_.insert(position.value());
      earliest_waited_.store(*waiting_.begin(), std::memory_order_relaxed);
      struct Leave {
        const Impl* self;
        std::multiset<std::uint64_t>::iterator it;
        ~Leave() {
          self->waiting_.erase(it);
          self->earliest_waited_.store(self->waiting_.empty() ? kNobodyWaits : *self->waiting_.begin(),
                                       std::memory_order_relaxed);
        }
      } leave{this, it};
      cv_.wait_for(lock, timeout, [&] { return shown_.position >= position || !running_; });
    }
    if (shown_.position >= position) return WaitResult::reached;
    return running_ ? WaitResult::timeout : WaitResult::stopped;
  }

  const ProjectionKey& key() const { return p_.key; }

 private:
  void run(std::stop_token stop) {
    bool prepared = false, moved = false;
    for (;;) {
      try {
        if (!prepared) {
          prepare();
          prepared = true;
        }
        if (moved) {
          moved = false;
          if (!reload_checkpoint()) {
            // A newer version was switched in: its row stays retired, and this runner has nothing left to do.
            status_ = ProjectionStatus::retired;
            finish_display("retired");
            end_run(nullptr);
            return;
          }
        }
        follow(stop);
        status_ = ProjectionStatus::stopped;
        commit();
        finish_display("stopped");
        end_run(nullptr);
        return;
      } catch (const CheckpointMoved&) {
        tx_.reset();  // rolls the batch back: the other runner has applied it
        failure_context_.clear();
        moved = true;
        if (stop.stop_requested()) {
          status_ = ProjectionStatus::stopped;
          finish_display("stopped");
          end_run(nullptr);
          return;
        }
      } catch (...) {
        auto error = std::current_exception();
        tx_.reset();  // rolls the batch back
        // An outage is counted apart: it sets the back-off but never reaches max_attempts (as in the
        // partitioned runner), so a database that is down or contended for a while does not stop the runner.
        bool outage = store_outage(error);
        if (outage) {
          ++outages_;
        } else {
          ++attempts_;
        }
        last_error_ = failure_context_.empty() ? describe(error) : failure_context_ + ": " + describe(error);
        failure_context_.clear();
        bool stopping = stop.stop_requested();
        bool give_up = o_.on_error == OnError::stop || (!outage && o_.max_attempts > 0 && attempts_ >= o_.max_attempts);
        status_ =
            stopping ? ProjectionStatus::stopped : (give_up ? ProjectionStatus::failed : ProjectionStatus::retrying);
        milliseconds delay = backoff(outage ? outages_ : attempts_);
        auto next = stopping || give_up ? std::string("stopping") : fmt::format("retrying in {} ms", delay.count());
        if (outage) {
          o_.log(fmt::format("sourced: projection {} v{}: {} (a store failure, {} in a row); {}", p_.key.name,
                             p_.key.version, last_error_, outages_, next));
        } else {
          o_.log(fmt::format("sourced: projection {} v{}: {} (attempt {}); {}", p_.key.name, p_.key.version,
                             last_error_, attempts_, next));
        }
        record_state();
        publish(false);
        if (stopping || give_up) {
          end_run(give_up && !stopping ? error : nullptr);
          return;
        }
        wait_backoff(delay, stop);
        if (stop.stop_requested()) {
          status_ = ProjectionStatus::stopped;
          record_state();
          end_run(nullptr);
          return;
        }
      }
    }
  }

  // Real waits in short slices, each ending with a look at the clock, which may be a test's.
  void wait_backoff(milliseconds delay, std::stop_token stop) {
    auto until = clock_.now() + delay;
    std::mutex mu;
    std::condition_variable_any cv;
    for (auto now = clock_.now(); now < until && !stop.stop_requested(); now = clock_.now()) {
      std::unique_lock lock(mu);
      auto slice = std::min<Clock::TimePoint::duration>(until - now, std::chrono::milliseconds(20));
      cv.wait_for(lock, stop, slice, [] { return false; });
    }
  }

  milliseconds backoff(std::uint32_t failures) const {
    milliseconds d = o_.retry_initial;
    for (std::uint32_t i = 1; i < failures && d < o_.retry_max; ++i) d *= 2;
    return std::min(d, o_.retry_max);
  }

  // A broken connection, or a store error that says repeating may succeed (SQLite busy past its timeout;
  // PostgreSQL deadlock, serialization failure, lock or statement timeout, a session the server ended):
  // contention or an outage, not the projection's fault, wherever it came from (the read of the log, a
  // handler's statement, the commit).
  static bool store_outage(std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const ConnectionError&) {
      return true;
    } catch (const StorageError& x) {
      return x.transient();
    } catch (...) {
      return false;
    }
  }

  // Best effort: a store that cannot save the error cannot save anything, and the log has it. Fenced like a
  // batch: a row another runner has moved on is left as that runner wrote it.
  void record_state() {
    try {
      auto tx = begin();
      if (tx->save_state_if(state_row(committed_), Position(committed_))) tx->commit();
    } catch (const std::exception& e) {
      o_.log(fmt::format("sourced: projection {} v{}: could not record its state: {}", p_.key.name, p_.key.version,
                         e.what()));
    }
  }

  ProjectionState state_row(std::uint64_t checkpoint) const {
    return ProjectionState{p_.key, Position(checkpoint), status_, last_error_, attempts_, now()};
  }

  // Every transaction knows its projection, so the hooks' tx.table("x") names this version's tables.
  std::unique_ptr<ProjectionTransaction> begin() {
    auto tx = models_.begin_transaction();
    tx->set_projection(p_.key);
    return tx;
  }

  // After a refused commit: the stored checkpoint is where this runner goes on from. False when the row
  // was retired (blue/green switched a newer version in): the fence refuses every commit of this version.
  bool reload_checkpoint() {
    failure_context_ = "reading the checkpoint another runner moved";
    auto saved = models_.load_state(p_.key);
    failure_context_.clear();
    if (saved && saved->status == ProjectionStatus::retired) {
      o_.log(fmt::format(
          "sourced: projection {} v{}: retired (a newer version was switched in for readers) at checkpoint {}; this "
          "runner's batch was rolled back and it stops",
          p_.key.name, p_.key.version, saved->checkpoint.value()));
      return false;
    }
    std::uint64_t was = committed_;
    committed_ = saved ? saved->checkpoint.value() : 0;
    o_.log(fmt::format(
        "sourced: projection {} v{}: another runner committed (checkpoint {} -> {}); this one's batch was rolled "
        "back and it goes on from there",
        p_.key.name, p_.key.version, was, committed_));
    publish(false);
    return true;
  }

  void prepare() {
    auto saved = models_.load_state(p_.key);
    // committed_ mirrors the stored checkpoint at all times: a failure recorded before the rebuild's clear
    // commits must not move it.
    committed_ = saved ? saved->checkpoint.value() : 0;
    if (saved) {
      last_error_ = saved->last_error;
      attempts_ = saved->attempts;
    }
    if (p_.setup) {
      failure_context_ = "setting up";
      auto tx = begin();
      tx->lock_for_setup();
      p_.setup(*tx);
      tx->commit();
    }
    if (o_.start == StartMode::rebuild) {
      failure_context_ = "clearing the model for a rebuild";
      status_ = ProjectionStatus::rebuilding;
      auto tx = begin();
      tx->lock_for_setup();
      p_.clear(*tx);
      tx->save_state(state_row(0));
      tx->commit();
      committed_ = 0;
    } else {
      status_ = saved && saved->status == ProjectionStatus::rebuilding ? ProjectionStatus::rebuilding
                                                                       : ProjectionStatus::catching_up;
    }
    failure_context_.clear();
    catching_up_status_ = status_;
    run_started_ = clock_.now();
    run_start_position_ = committed_;
    publish(false);
  }

  void follow(std::stop_token stop) {
    // A filtered subscription reports how far it looked past events that did not pass, so wait_for() and
    // the checkpoint move through them.
    auto sub = subscribe_to_all(events_, {.start = SubscriptionStart::after(Position(committed_)),
                                          .filter = p_.filter,
                                          .checkpoint_interval = p_.filter ? 1u : 0u});
    pending_ = committed_;
    batch_events_ = 0;
    dirty_since_.reset();
    bool live = false;
    status_ = catching_up_status_;
    publish(live);
    while (!stop.stop_requested()) {
      auto now = clock_.now();
      tick(now, live);
      milliseconds wait = kStopCheck;
      if (tx_ && live) {
        wait = milliseconds(0);  // only what is there already: then commit, so following stays prompt
      } else if (dirty_since_) {
        auto left = std::chrono::duration_cast<milliseconds>(*dirty_since_ + o_.batch_interval - now);
        wait = std::clamp(left, milliseconds(0), kStopCheck);
      }
      auto m = sub.next(wait);
      if (!m) {
        if (dirty_since_ && ((tx_ && live) || clock_.now() - *dirty_since_ >= o_.batch_interval)) commit();
        continue;
      }
      switch (m->kind) {
        case SubscriptionMessage::Kind::event:
          apply(*m->event);
          break;
        case SubscriptionMessage::Kind::checkpoint:
          scanned(m->checkpoint);
          break;
        case SubscriptionMessage::Kind::caught_up:
          scanned(m->checkpoint);
          live = true;
          catching_up_status_ = ProjectionStatus::catching_up;
          status_ = ProjectionStatus::following;
          commit();
          finish_display("caught up");
          if (o_.stop_when_caught_up) return;
          break;
        case SubscriptionMessage::Kind::fell_behind:
          live = false;
          break;
      }
      if (dirty_since_ && (batch_events_ >= o_.batch_events || clock_.now() - *dirty_since_ >= o_.batch_interval ||
                           (awaited() && !sub.has_buffered()))) {
        commit();
      }
    }
  }

  // Whether a wait_for() is pending for a position the open batch has applied (or scanned past) but not
  // committed. The runner then commits once it has applied the events it holds (the rest of the page
  // read with that position) rather than at the batch's size or time limit, or after more reads: a
  // waiter pays about one read and one commit, and many waiters share a commit. Read without the lock:
  // a waiter that registers just after this look is seen after the next event, or released by the
  // batch's own commit.
  bool awaited() const {
    std::uint64_t earliest = earliest_waited_.load(std::memory_order_relaxed);
    return tx_ && earliest > committed_ && earliest <= pending_;
  }

  void apply(const RecordedEvent& e) {
    if (!tx_) {
      failure_context_ = "starting a batch";
      tx_ = begin();
      if (p_.begin_batch) p_.begin_batch(*tx_);
    }
    failure_context_ =
        fmt::format("applying position {} (stream '{}', type '{}')", e.position.value(), e.stream, e.type);
    p_.handle(*tx_, e);
    failure_context_.clear();
    pending_ = e.position.value();
    ++batch_events_;
    if (!dirty_since_) dirty_since_ = clock_.now();
  }

  void scanned(std::uint64_t through) {
    if (through <= pending_) return;
    pending_ = through;
    if (!dirty_since_) dirty_since_ = clock_.now();
    if (!tx_) {
      // Nothing applied since the last commit: the model is as it would be after these positions.
      std::lock_guard lock(mu_);
      shown_.position = Position(pending_);
      cv_.notify_all();
    }
  }

  void commit() {
    if (tx_ && p_.end_batch) {
      failure_context_ = fmt::format("ending the batch through position {}", pending_);
      p_.end_batch(*tx_);
    }
    failure_context_ = fmt::format("committing the batch through position {}", pending_);
    if (!tx_) tx_ = begin();
    // A batch that moves the checkpoint ends a run of failures, once it has committed.
    bool moves = pending_ > committed_ || batch_events_ > 0;
    auto row = state_row(pending_);
    if (moves) row.attempts = 0;
    // The fence: two runners of this key (two processes started by mistake, a blue/green handover) would
    // otherwise both apply each event, and the slower one would move the checkpoint back.
    if (!tx_->save_state_if(row, Position(committed_))) throw CheckpointMoved{};
    tx_->commit();
    if (moves) attempts_ = 0;
    outages_ = 0;
    tx_.reset();
    failure_context_.clear();
    committed_ = pending_;
    applied_ += batch_events_;
    batch_events_ = 0;
    dirty_since_.reset();
    publish(status_ == ProjectionStatus::following);
  }

  void publish(bool live) {
    std::lock_guard lock(mu_);
    shown_.status = status_;
    shown_.position = std::max(shown_.position, Position(committed_));
    shown_.live = live;
    shown_.events_applied = applied_;
    shown_.last_error = last_error_;
    shown_.attempts = attempts_;
    cv_.notify_all();
  }

  void end_run(std::exception_ptr error) {
    std::lock_guard lock(mu_);
    running_ = false;
    error_ = error;
    shown_.status = status_;
    cv_.notify_all();
  }

  // Refreshes the head, the rate and the progress display now and then.
  void tick(Clock::TimePoint now, bool live) {
    if (now - head_read_ >= kHeadRefresh || head_read_ == Clock::TimePoint()) {
      head_read_ = now;
      std::uint64_t head = events_.head_position().value();
      std::lock_guard lock(mu_);
      shown_.head = Position(head);
      std::uint64_t pos = shown_.position.value();
      samples_.emplace_back(now, pos);
      while (samples_.size() > 2 && now - samples_.front().first > kRateWindow) samples_.pop_front();
      double dt = std::chrono::duration<double>(samples_.back().first - samples_.front().first).count();
      if (dt >= 0.2) {
        shown_.events_per_second = static_cast<double>(samples_.back().second - samples_.front().second) / dt;
      }
      if (head <= pos) {
        shown_.eta = std::chrono::seconds(0);
      } else if (shown_.events_per_second > 0) {
        shown_.eta =
            std::chrono::seconds(static_cast<std::int64_t>(std::ceil((head - pos) / shown_.events_per_second)));
      } else {
        shown_.eta.reset();
      }
    }
    if (live || o_.progress == ProgressDisplay::none) return;
    auto every = bar_ ? kBarRefresh : o_.progress_interval;
    if (displayed_ && now - last_display_ < every) return;
    if (!displayed_ && !bar_ && now - run_started_ < std::min(every, milliseconds(1000))) return;
    last_display_ = now;
    displayed_ = true;
    auto line = progress_text(progress());
    if (bar_) {
      fmt::print(o_.progress_stream, "\r{}\x1b[K", line);
    } else {
      fmt::print(o_.progress_stream, "{}\n", line);
    }
    std::fflush(o_.progress_stream);
  }

  std::string progress_text(const ProjectionProgress& p) const {
    std::uint64_t pos = p.position.value(), head = std::max(p.head.value(), pos);
    double fraction = head == 0 ? 1.0 : static_cast<double>(pos) / static_cast<double>(head);
    std::string eta = p.eta ? duration_text(*p.eta) : "?";
    std::string text = fmt::format("projection {} v{} {}: {}/{} ({:.1f}%), {} ev/s, ETA {}", p_.key.name,
                                   p_.key.version, to_string(p.status), with_commas(pos), with_commas(head),
                                   100 * fraction, with_commas(static_cast<std::uint64_t>(p.events_per_second)), eta);
    if (!bar_) return text;
    constexpr int kWidth = 30;
    int filled = static_cast<int>(fraction * kWidth);
    return "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "] " + text;
  }

  void finish_display(std::string_view how) {
    if (!displayed_) return;
    double secs = std::chrono::duration<double>(clock_.now() - run_started_).count();
    std::uint64_t done = committed_ - run_start_position_;
    fmt::print(o_.progress_stream, "{}projection {} v{}: {} at position {} ({} positions in {:.1f} s)\n",
               bar_ ? "\r\x1b[K" : "", p_.key.name, p_.key.version, how, with_commas(committed_), with_commas(done),
               secs);
    std::fflush(o_.progress_stream);
    displayed_ = false;
  }

  EventStore& events_;
  ProjectionStore& models_;
  detail::ErasedProjection p_;
  ProjectionRunnerOptions o_;
  Clock& clock_;
  bool bar_ = false;

  // The runner thread's own state.
  std::unique_ptr<ProjectionTransaction> tx_;  // the open batch, when it has events
  std::uint64_t committed_ = 0;                // the checkpoint in the store
  std::uint64_t pending_ = 0;                  // what the next commit saves
  std::size_t batch_events_ = 0;
  std::optional<Clock::TimePoint> dirty_since_;  // when pending_ first moved past committed_
  std::uint64_t applied_ = 0;
  ProjectionStatus status_ = ProjectionStatus::catching_up;
  ProjectionStatus catching_up_status_ = ProjectionStatus::catching_up;
  std::string last_error_;
  std::string failure_context_;
  std::uint32_t attempts_ = 0;
  std::uint32_t outages_ = 0;  // store failures in a row (store_outage()): the back-off, never max_attempts
  Clock::TimePoint head_read_{};
  Clock::TimePoint run_started_{};
  Clock::TimePoint last_display_{};
  std::uint64_t run_start_position_ = 0;
  bool displayed_ = false;

  // Shared with other threads, under mu_.
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  ProjectionProgress shown_;
  std::deque<std::pair<Clock::TimePoint, std::uint64_t>> samples_;
  bool running_ = true;
  std::exception_ptr error_;
  // The positions wait_for() calls are waiting for (one entry per call), and the smallest of them for the
  // runner thread to read without the lock (kNobodyWaits when none).
  static constexpr std::uint64_t kNobodyWaits = std::numeric_limits<std::uint64_t>::max();
  mutable std::multiset<std::uint64_t> waiting_;
  mutable std::atomic<std::uint64_t> earliest_waited_{kNobodyWaits};

  std::jthread thread_;  // last: stopped before the rest goes
};

ProjectionRunner::ProjectionRunner(EventStore& events, ProjectionStore& models, detail::ErasedProjection projection,
                                   ProjectionRunnerOptions options)
    : impl_(std::make_shared<Impl>(events, models, std::move(projection), std::move(options))) {
  impl_->start();
}

ProjectionRunner::~ProjectionRunner() { stop(); }

void ProjectionRunner::stop() { impl_->stop(); }
bool ProjectionRunner::running() const { return impl_->running(); }
bool ProjectionRunner::wait_until_stopped(std::chrono::milliseconds timeout) const {
  return impl_->wait_until_stopped(timeout);
}
std::exception_ptr ProjectionRunner::error() const { return impl_->error(); }
ProjectionProgress ProjectionRunner::progress() const { return impl_->progress(); }
WaitResult ProjectionRunner::wait_for(Position position, std::chrono::milliseconds timeout) const {
  return impl_->wait_for(position, timeout);
}
std::function<bool(Position, std::chrono::milliseconds)> ProjectionRunner::waiter() const {
  return [impl = impl_](Position position, std::chrono::milliseconds timeout) {
    return impl->wait_for(position, timeout) == WaitResult::reached;
  };
}
const ProjectionKey& ProjectionRunner::key() const { return impl_->key(); }

}  // namespace sourced
