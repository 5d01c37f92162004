#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <unistd.h>

#include "projections/state_rows.hpp"
#include "sourced/error.hpp"
#include "sourced/projection_partitions.hpp"
#include "sourced/subscription.hpp"

namespace sourced {
namespace {
using std::chrono::milliseconds;

constexpr milliseconds kStopCheck(50);
// How often a worker asks whether it still holds its lease (the fence makes a lost lease harmless; this
// only stops the work sooner).
constexpr milliseconds kLeaseCheck(1000);
// A process that already works k partitions waits k steps before taking one more, so processes started
// together end up with a share each rather than the first one taking everything.
constexpr milliseconds kFairStep(25);
// How many of a partition's events past its checkpoint the coordinator lists (see Part::ahead): at 10,000
// events a second, several seconds of a stalled partition; past it, done() falls back to the checkpoint.
constexpr std::size_t kAheadCap = 1 << 16;
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

std::string key_text(const ProjectionKey& k) {
  return fmt::format("projection '{}' v{} partition '{}'", k.name, k.version, k.partition);
}

// The fence refused a save: another process owns the partition now.
struct LostOwnership : StorageError {
  explicit LostOwnership(const ProjectionKey& k, Position expected)
      : StorageError(fmt::format("{}: its checkpoint is no longer {} (another process took the partition over); "
                                 "nothing committed",
                                 key_text(k), expected.value())) {}
};

// A rebuild that could not get every partition's lease: trying again later is the operator's call.
struct RebuildBlocked : StorageError {
  using StorageError::StorageError;
};

// Waits in short real slices, asking the (possibly a test's) clock after each.
void wait_on(Clock& clock, milliseconds delay, std::stop_token stop) {
  auto until = clock.now() + delay;
  std::mutex mu;
  std::condition_variable_any cv;
  for (auto now = clock.now(); now < until && !stop.stop_requested(); now = clock.now()) {
    std::unique_lock lock(mu);
    auto slice = std::min<Clock::TimePoint::duration>(until - now, milliseconds(20));
    cv.wait_for(lock, stop, slice, [] { return false; });
  }
}

std::string with_commas(std::uint64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
  return s;
}
}  // namespace

std::uint32_t partition_for(std::string_view key, std::uint32_t partitions) {
  if (partitions <= 1) return 0;
  return static_cast<std::uint32_t>(detail::stable_hash(key) % partitions);
}

void retry_partition(ProjectionStore& models, const ProjectionKey& key) {
  auto s = models.load_state(key);
  if (!s) throw InvalidArgument(fmt::format("{} has no state row in this read-model database", key_text(key)));
  if (s->status != ProjectionStatus::failed) {
    throw InvalidArgument(
        fmt::format("{} has not failed (status {}): there is nothing to retry", key_text(key), to_string(s->status)));
  }
  auto row = *s;
  row.status = ProjectionStatus::catching_up;
  row.attempts = 0;
  row.updated_at = now();
  auto tx = models.begin_transaction();
  if (!tx->save_state_if(row, s->checkpoint)) {
    throw StorageError(fmt::format("{} changed while it was being retried; look again", key_text(key)));
  }
  tx->resolve_errors(key, "retried", row.updated_at);
  tx->commit();
}

ProjectionError skip_partition_event(ProjectionStore& models, const ProjectionKey& key) {
  auto s = models.load_state(key);
  if (!s) throw InvalidArgument(fmt::format("{} has no state row in this read-model database", key_text(key)));
  if (s->status != ProjectionStatus::failed) {
    throw InvalidArgument(
        fmt::format("{} has not failed (status {}): there is no event to skip", key_text(key), to_string(s->status)));
  }
  std::optional<ProjectionError> open;
  for (auto& e : models.list_errors(key.name)) {
    if (e.key == key && e.resolution.empty()) open = e;  // ordered by position: the last one is the latest
  }
  if (!open) throw InvalidArgument(fmt::format("{} has failed but has no open error row to skip", key_text(key)));
  if (open->event_id.empty()) {
    throw InvalidArgument(fmt::format("{} failed at position {} on no single event ({}): retry it instead",
                                      key_text(key), open->position.value(), open->message));
  }
  if (open->position <= s->checkpoint) {
    throw StorageError(fmt::format("{}: its error at position {} is at or before its checkpoint {}", key_text(key),
                                   open->position.value(), s->checkpoint.value()));
  }
  auto row = *s;
  row.checkpoint = open->position;
  row.status = ProjectionStatus::catching_up;
  row.attempts = 0;
  row.updated_at = now();
  auto tx = models.begin_transaction();
  if (!tx->save_state_if(row, s->checkpoint)) {
    throw StorageError(fmt::format("{} changed while its event was being skipped; look again", key_text(key)));
  }
  tx->resolve_errors(key, "skipped", row.updated_at);
  tx->commit();
  open->resolution = "skipped";
  open->resolved_at = row.updated_at;
  return *open;
}

// Two kinds of threads (docs/projections.md, "Partitions"). The coordinator follows the log from the
// least checkpoint of all partitions and notes, per partition, the last position holding one of its
// events: a partition with events past its checkpoint has work; the coordinator takes its lease (when
// nobody holds it) and starts its worker. A worker reads the log from its partition's checkpoint, applies
// that partition's events in batches (the state row saved, fenced, in the batch's transaction), and ends
// when idle, stopped, failed or fenced out; its lease goes with it.
class PartitionedProjectionRunner::Impl {
 public:
  Impl(EventStore& events, ProjectionStore& models, detail::ErasedProjection p, PartitionedRunnerOptions o)
      : events_(events),
        models_(models),
        p_(std::move(p)),
        o_(std::move(o)),
        clock_(o_.clock ? *o_.clock : Clock::steady()) {
    if (p_.key.name.empty()) throw InvalidArgument("a projection needs a name");
    if (!p_.handle) throw InvalidArgument(fmt::format("projection '{}' has no handler", p_.key.name));
    if (o_.partitions == 0 || o_.partitions > 4096) {
      throw InvalidArgument(
          fmt::format("projection '{}': {} partitions; expected 1 to 4096", p_.key.name, o_.partitions));
    }
    if (o_.start == StartMode::rebuild && !p_.clear) {
      throw InvalidArgument(fmt::format("projection '{}' cannot be rebuilt: it has no clear hook", p_.key.name));
    }
    if (p_.filter) events_.read_all({.max_count = 0, .filter = p_.filter});  // checks it
    if (o_.batch_events == 0) o_.batch_events = 1;
    if (o_.max_attempts == 0) o_.max_attempts = 1;
    if (!o_.progress_stream) o_.progress_stream = stderr;
    if (!o_.log) o_.log = [](std::string_view line) { fmt::print(stderr, "{}\n", line); };
    bar_ = o_.progress == ProgressDisplay::bar ||
           (o_.progress == ProgressDisplay::automatic && ::isatty(::fileno(o_.progress_stream)) == 1);
    parts_.resize(o_.partitions);
    workers_.resize(o_.partitions);
    std::random_device rd;
    rotate_ = rd() % o_.partitions;
  }

  ~Impl() { stop(); }

  void start() {
    thread_ = std::jthread([this](std::stop_token stop) { coordinate(stop); });
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

  ProjectionKey part_key(std::uint32_t p) const {
    return ProjectionKey{p_.key.name, p_.key.version, std::to_string(p)};
  }

  std::uint32_t partition_of(const RecordedEvent& e) const {
    if (o_.partitions == 1) return 0;
    if (o_.key) return partition_for(o_.key(e), o_.partitions);
    return partition_for(e.stream, o_.partitions);
  }

  PartitionedProgress progress() const {
    std::lock_guard lock(mu_);
    return progress_locked();
  }

  WaitResult wait_for(Position position, milliseconds timeout) const {
    std::unique_lock lock(mu_);
    WaitResult result = WaitResult::timeout;
    // Told to the workers, which commit an open batch holding an event of theirs at or before this
    // position as soon as they have read through it (see awaited()), not at the batch's limits.
    auto it = waiting_.insert(position.value());
    latest_waited_.store(*waiting_.rbegin(), std::memory_order_relaxed);
    struct Leave {
      const Impl* self;
      std::multiset<std::uint64_t>::iterator it;
      ~Leave() {
        self->waiting_.erase(it);
        self->latest_waited_.store(self->waiting_.empty() ? 0 : *self->waiting_.rbegin(), std::memory_order_relaxed);
      }
    } leave{this, it};
    cv_.wait_for(lock, timeout, [&] {
      bool all = true;
      for (std::uint32_t p = 0; p < parts_.size(); ++p) {
        if (done(p) >= position.value()) continue;
        const Part& part = parts_[p];
        if (part.status == ProjectionStatus::failed && !part.here) {
          // A failed partition has applied every event of its own before the one it failed on (review 5,
          // PP-3): it has processed the position when that event comes after it, and stops the wait when
          // not. Where the failing event is not known, its checkpoint is what it has.
          std::uint64_t failing = part.failed_at ? part.failed_at : known(p) + 1;
          if (failing <= position.value()) {
            result = WaitResult::stopped;
            return true;
          }
          continue;
        }
        all = false;
      }
      if (all) {
        result = WaitResult::reached;
        return true;
      }
      if (!running_) {
        result = WaitResult::stopped;
        return true;
      }
      return false;
    });
    return result;
  }

  void retry(std::uint32_t p) {
    check_partition(p);
    retry_partition(models_, part_key(p));
    poke(p);
  }

  ProjectionError skip(std::uint32_t p) {
    check_partition(p);
    auto e = skip_partition_event(models_, part_key(p));
    poke(p);
    return e;
  }

  const ProjectionKey& key() const { return p_.key; }

 private:
  // What the runner knows of one partition. Under mu_.
  struct Part {
    std::uint64_t stored = 0;     // its checkpoint, as last read from the state rows or committed here
    std::uint64_t processed = 0;  // what its worker here has processed (committed, or scanned past)
    std::uint64_t last_seen = 0;  // the last position of one of its events the coordinator has read
    // The positions of its events the coordinator has read past known(), in order; while `complete`, every
    // one of them through watcher_pos_, so the partition has processed every position before the first
    // of them (done()). Not complete once it overflowed kAheadCap or its checkpoint went back (its
    // earlier entries were dropped as committed), until it has committed all the coordinator saw of it.
    std::deque<std::uint64_t> ahead;
    bool complete = true;
    std::uint64_t failed_at = 0;  // while failed: the position it failed on (its open error row), 0 unknown
    ProjectionStatus status = ProjectionStatus::catching_up;
    std::string last_error;
    bool here = false;
  };
  // A worker: the coordinator thread alone starts, reaps and stops them.
  struct Worker {
    std::unique_ptr<ProjectionLease> lease;
    std::atomic<bool> ended{false};
    std::jthread thread;  // last: joined before the lease goes
  };

  void check_partition(std::uint32_t p) const {
    if (p >= o_.partitions) {
      throw InvalidArgument(
          fmt::format("projection '{}' has partitions 0 to {}, not {}", p_.key.name, o_.partitions - 1, p));
    }
  }

  void poke(std::uint32_t p) {
    std::lock_guard lock(mu_);
    parts_[p].status = ProjectionStatus::catching_up;
    parts_[p].failed_at = 0;
    poll_now_ = true;
    cv_.notify_all();
  }

  std::uint64_t known(std::uint32_t p) const { return std::max(parts_[p].stored, parts_[p].processed); }
  // Processed through here: its own checkpoint, or, when the coordinator has read past it, as far as the
  // coordinator has read or to just before the first event of the partition it read past the checkpoint:
  // a partition has processed a position once every event of its own at or before it is committed, its
  // events after it do not count (issue: with events arriving all the time, every partition has some
  // past any waited position, and a waiter waited for each partition's next commit).
  std::uint64_t done(std::uint32_t p) const {
    const Part& part = parts_[p];
    std::uint64_t k = known(p);
    if (k < seen_from_) return k;
    if (part.last_seen <= k) return std::max(k, watcher_pos_);
    if (!part.complete) return k;
    auto next = std::upper_bound(part.ahead.begin(), part.ahead.end(), k);
    if (next == part.ahead.end()) return k;
    return std::max(k, std::min(*next - 1, watcher_pos_));
  }
  // The coordinator read an event of partition p (under mu_).
  void note_event(std::uint32_t p, std::uint64_t position) {
    Part& part = parts_[p];
    std::uint64_t k = known(p);
    while (!part.ahead.empty() && part.ahead.front() <= k) part.ahead.pop_front();
    if (!part.complete && part.last_seen <= k) part.complete = true;  // nothing it saw is left to list
    if (part.complete && position > k && (part.ahead.empty() || position > part.ahead.back())) {
      if (part.ahead.size() < kAheadCap) {
        part.ahead.push_back(position);
      } else {
        part.ahead.clear();
        part.complete = false;
      }
    }
    part.last_seen = std::max(part.last_seen, position);
  }
  // A partition's checkpoint as read from its row may go back (a rebuild or skip elsewhere, a row read
  // anew): the events listed before were dropped as committed, so the list is no longer complete.
  void known_set(std::uint32_t p, std::uint64_t checkpoint) {
    Part& part = parts_[p];
    std::uint64_t before = known(p);
    part.stored = checkpoint;
    part.processed = checkpoint;
    if (checkpoint < before) {
      part.ahead.clear();
      part.complete = false;
    }
  }
  bool has_work(std::uint32_t p) const { return parts_[p].last_seen > known(p); }

  PartitionedProgress progress_locked() const {
    PartitionedProgress out;
    out.total = total_;
    std::uint64_t least = kUnlimited;
    std::uint32_t failed = 0;
    for (std::uint32_t p = 0; p < parts_.size(); ++p) {
      const Part& part = parts_[p];
      least = std::min(least, done(p));
      if (part.status == ProjectionStatus::failed) ++failed;
      out.partitions.push_back(PartitionProgress{p, Position(done(p)), part.status, part.here, part.last_error});
    }
    out.total.position = Position(least == kUnlimited ? 0 : least);
    if (failed > 0) out.total.last_error = fmt::format("{} partition(s) failed", failed);
    return out;
  }

  // Every transaction knows its projection, so the hooks' tx.table("x") names this version's tables.
  std::unique_ptr<ProjectionTransaction> begin() {
    auto tx = models_.begin_transaction();
    tx->set_projection(p_.key);
    return tx;
  }

  // ---- the coordinator ----

  // Store errors (a PostgreSQL restart, a reset connection, a busy or full SQLite file) are retried with
  // back-off for as long as it takes, as the plain ProjectionRunner does (review 5, PP-2): the workers go on
  // meanwhile, each with its own reads. What retrying cannot mend ends the run: bad input (another partition
  // count), a rebuild that could not get every lease, an error of the application's code (a key function).
  void coordinate(std::stop_token stop) {
    bool prepared = false;
    std::uint32_t failures = 0;
    while (!stop.stop_requested()) {
      try {
        if (!prepared) {
          prepare();
          prepared = true;
        }
        if (watch(stop, failures)) break;
      } catch (...) {
        auto e = std::current_exception();
        if (stop.stop_requested()) break;
        if (!retriable(e)) {
          o_.log(fmt::format("sourced: projection {} v{}: {}; stopping", p_.key.name, p_.key.version, describe(e)));
          stop_workers();
          end_run(e);
          return;
        }
        ++failures;
        auto delay = backoff(failures);
        o_.log(fmt::format("sourced: projection {} v{}: {} (attempt {}); retrying in {} ms", p_.key.name,
                           p_.key.version, describe(e), failures, delay.count()));
        {
          std::lock_guard lock(mu_);
          total_.status = ProjectionStatus::retrying;
          total_.last_error = describe(e);
          cv_.notify_all();
        }
        wait_on(clock_, delay, stop);
      }
    }
    stop_workers();
    finish_display("stopped");
    end_run(nullptr);
  }

  static bool retriable(std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const RebuildBlocked&) {
      return false;
    } catch (const StorageError&) {
      return true;
    } catch (const ConnectionError&) {
      return true;
    } catch (...) {
      return false;
    }
  }

  // Follows the log from where the coordinator has read (at first the least checkpoint) until stopped or,
  // with stop_when_caught_up, done (true), or until it must read again from further back (false); throws
  // what the store throws.
  bool watch(std::stop_token stop, std::uint32_t& failures) {
    std::uint64_t from = kUnlimited;
    {
      // From where it has read to, unless a checkpoint went back before where it began reading (a rebuild
      // elsewhere): then what it knows of that partition's events is incomplete, and it reads again.
      std::lock_guard lock(mu_);
      for (std::uint32_t p = 0; p < parts_.size(); ++p) from = std::min(from, parts_[p].stored);
      if (from >= seen_from_) from = std::max(from, watcher_pos_);
      seen_from_ = std::min(seen_from_, from);
      watcher_pos_ = from;  // back too, when reading again: done() counts on it
      // What is read again is listed again.
      for (auto& part : parts_) {
        while (!part.ahead.empty() && part.ahead.back() > from) part.ahead.pop_back();
      }
      rewind_ = false;
    }
    auto sub = subscribe_to_all(events_, {.start = SubscriptionStart::after(Position(from)),
                                          .filter = p_.filter,
                                          .checkpoint_interval = p_.filter ? 1u : 0u});
    bool live = false;
    auto last_poll = clock_.now();
    auto last_done_check = clock_.now();
    while (!stop.stop_requested()) {
      auto now = clock_.now();
      bool poll = false;
      {
        std::lock_guard lock(mu_);
        poll = std::exchange(poll_now_, false);
      }
      reap();
      if (poll || now - last_poll >= o_.takeover_interval) {
        last_poll = now;
        retake_at_.reset();
        read_rows();
        {
          std::lock_guard lock(mu_);
          if (rewind_) return false;
        }
        take_partitions(now);
      } else if (retake_at_ && now >= *retake_at_) {
        retake_at_.reset();
        take_partitions(now);
      }
      tick(now, live);
      auto m = sub.next(kStopCheck);
      if (failures > 0) {
        failures = 0;
        o_.log(fmt::format("sourced: projection {} v{}: reading the log again", p_.key.name, p_.key.version));
        std::lock_guard lock(mu_);
        total_.status = base_status_;
        total_.last_error.clear();
      }
      if (m) {
        std::lock_guard lock(mu_);
        std::uint64_t read_before = watcher_pos_;
        switch (m->kind) {
          case SubscriptionMessage::Kind::event: {
            auto p = partition_of(*m->event);
            note_event(p, m->event->position.value());
            watcher_pos_ = std::max(watcher_pos_, m->event->position.value());
            if (!work_since_[p]) work_since_[p] = now;
            break;
          }
          case SubscriptionMessage::Kind::checkpoint:
            watcher_pos_ = std::max(watcher_pos_, m->checkpoint);
            break;
          case SubscriptionMessage::Kind::caught_up:
            watcher_pos_ = std::max(watcher_pos_, m->checkpoint);
            live = true;
            break;
          case SubscriptionMessage::Kind::fell_behind:
            live = false;
            break;
        }
        // Only how far the coordinator has read can pass a waiter here (done()).
        if (passes_a_waiter(read_before, watcher_pos_)) cv_.notify_all();
      }
      if (m && m->kind == SubscriptionMessage::Kind::event) take_partition(partition_of(*m->event), now);
      if (live) settle_quiet_partitions(now);
      if (o_.stop_when_caught_up && live && (!m || clock_.now() - last_done_check >= milliseconds(100))) {
        last_done_check = clock_.now();
        if (caught_up_everywhere()) return true;
      }
    }
    return true;
  }

  // A partition without events gets no worker, so after a rebuild its row would say `rebuilding` at
  // checkpoint 0 (lag = the head, in `projections`) for good. Once the coordinator is live, such a row is
  // moved to where the coordinator has read, status `following`, under the partition's lease and fenced on
  // the checkpoint as a worker's commit is.
  void settle_quiet_partitions(Clock::TimePoint at) {
    std::vector<std::pair<std::uint32_t, std::uint64_t>> quiet;  // partition, its checkpoint
    std::uint64_t through = 0;
    {
      std::lock_guard lock(mu_);
      through = watcher_pos_;
      for (std::uint32_t p = 0; p < parts_.size(); ++p) {
        const Part& part = parts_[p];
        if (part.here || part.status != ProjectionStatus::rebuilding || has_work(p)) continue;
        if (last_try_[p] && at - *last_try_[p] < o_.takeover_interval) continue;
        if (part.stored < through && part.stored >= seen_from_) quiet.emplace_back(p, part.stored);
      }
    }
    for (auto [p, expected] : quiet) {
      auto lease = models_.try_lease(part_key(p));
      if (!lease) {
        last_try_[p] = at;  // another process works it
        continue;
      }
      auto tx = begin();
      ProjectionState row{part_key(p), Position(through), ProjectionStatus::following, "", 0, now()};
      if (!tx->save_state_if(row, Position(expected))) {
        last_try_[p] = at;  // moved elsewhere: the next read of the rows says how
        continue;
      }
      tx->commit();
      std::lock_guard lock(mu_);
      parts_[p].stored = std::max(parts_[p].stored, through);
      parts_[p].status = ProjectionStatus::following;
      cv_.notify_all();
    }
  }

  bool caught_up_everywhere() {
    std::uint64_t head = events_.head_position().value();
    std::lock_guard lock(mu_);
    if (watcher_pos_ < head) return false;
    for (std::uint32_t p = 0; p < parts_.size(); ++p) {
      if (done(p) < head && parts_[p].status != ProjectionStatus::failed) return false;
    }
    return true;
  }

  void prepare() {
    std::vector<ProjectionState> mine;
    for (auto& s : models_.list_states()) {
      if (s.key.name != p_.key.name || s.key.version != p_.key.version) continue;
      bool ours = false;
      for (std::uint32_t p = 0; p < o_.partitions && !ours; ++p) ours = s.key.partition == std::to_string(p);
      if (!ours) {
        throw InvalidArgument(fmt::format(
            "projection '{}' v{} has a state row for partition '{}', but runs with {} partitions (\"0\" to \"{}\"): "
            "a different partitioning needs a new version or a rebuild",
            p_.key.name, p_.key.version, s.key.partition, o_.partitions, o_.partitions - 1));
      }
      mine.push_back(s);
    }
    if (p_.setup) {
      // Processes of one projection start together, and two PostgreSQL sessions creating the same table at
      // once collide in the catalog (CREATE TABLE IF NOT EXISTS included): the loser tries again.
      for (int attempt = 1;; ++attempt) {
        try {
          auto tx = begin();
          tx->lock_for_setup();
          p_.setup(*tx);
          tx->commit();
          break;
        } catch (const StorageError&) {
          if (attempt >= 5) throw;
          std::this_thread::sleep_for(milliseconds(20 * attempt));
        }
      }
    }
    if (o_.start == StartMode::rebuild) {
      // Every lease first: no worker anywhere may be writing while the model is cleared.
      std::vector<std::unique_ptr<ProjectionLease>> leases(o_.partitions);
      auto until = clock_.now() + o_.lease_wait;
      for (std::uint32_t p = 0; p < o_.partitions; ++p) {
        while (!(leases[p] = models_.try_lease(part_key(p)))) {
          if (clock_.now() >= until || thread_.get_stop_token().stop_requested()) {
            throw RebuildBlocked(fmt::format("{}: another process still works it after {} ms; cannot rebuild",
                                             key_text(part_key(p)), o_.lease_wait.count()));
          }
          std::this_thread::sleep_for(milliseconds(20));
        }
      }
      auto tx = begin();
      tx->lock_for_setup();
      p_.clear(*tx);
      auto at = now();
      for (std::uint32_t p = 0; p < o_.partitions; ++p) {
        tx->save_state(ProjectionState{part_key(p), Position(0), ProjectionStatus::rebuilding, "", 0, at});
        tx->resolve_errors(part_key(p), "retried", at);
      }
      tx->commit();
      mine.clear();
      for (std::uint32_t p = 0; p < o_.partitions; ++p) {
        mine.push_back(ProjectionState{part_key(p), Position(0), ProjectionStatus::rebuilding, "", 0, at});
      }
    }
    std::lock_guard lock(mu_);
    for (auto& s : mine) {
      auto p = static_cast<std::uint32_t>(std::stoul(s.key.partition));
      parts_[p].stored = s.checkpoint.value();
      parts_[p].status = s.status;
      parts_[p].last_error = s.last_error;
    }
    run_started_ = clock_.now();
    run_start_position_ = kUnlimited;
    for (auto& part : parts_) run_start_position_ = std::min(run_start_position_, part.stored);
    base_status_ = o_.start == StartMode::rebuild ? ProjectionStatus::rebuilding : ProjectionStatus::catching_up;
    total_.status = base_status_;
  }

  // The state rows of every partition: what other processes committed, failed or retried.
  void read_rows() {
    std::vector<ProjectionState> rows;
    std::vector<ProjectionError> errors;
    try {
      rows = models_.list_states();
      bool failed = false;
      for (auto& s : rows) {
        failed = failed ||
                 (s.key.name == p_.key.name && s.key.version == p_.key.version && s.status == ProjectionStatus::failed);
      }
      if (failed) errors = models_.list_errors(p_.key.name);  // where they failed, for wait_for
    } catch (const std::exception& e) {
      o_.log(fmt::format("sourced: projection {} v{}: cannot read its state rows: {}", p_.key.name, p_.key.version,
                         e.what()));
      return;
    }
    std::lock_guard lock(mu_);
    for (auto& s : rows) {
      if (s.key.name != p_.key.name || s.key.version != p_.key.version) continue;
      char* end = nullptr;
      unsigned long p = std::strtoul(s.key.partition.c_str(), &end, 10);
      if (s.key.partition.empty() || *end != '\0' || p >= parts_.size()) continue;
      Part& part = parts_[p];
      if (!part.here) {
        // Another process's word is final here, back included: a rebuild elsewhere resets the checkpoints
        // (review 5, PP-4); what a worker of this process once did no longer counts.
        known_set(static_cast<std::uint32_t>(p), s.checkpoint.value());
        if (part.stored < seen_from_) rewind_ = true;
        part.status = s.status;
        part.last_error = s.last_error;
        part.failed_at = 0;
        for (auto& e : errors) {
          if (e.key == s.key && e.resolution.empty() && s.status == ProjectionStatus::failed) {
            part.failed_at = e.position.value();
          }
        }
      }
    }
    cv_.notify_all();
  }

  void take_partitions(Clock::TimePoint now) {
    for (std::uint32_t i = 0; i < o_.partitions; ++i) take_partition((i + rotate_) % o_.partitions, now);
  }

  void take_partition(std::uint32_t p, Clock::TimePoint now) {
    std::size_t held = 0;
    {
      std::lock_guard lock(mu_);
      Part& part = parts_[p];
      if (part.here || part.status == ProjectionStatus::failed || part.status == ProjectionStatus::retired) return;
      if (!has_work(p)) {
        work_since_[p].reset();
        return;
      }
      for (auto& q : parts_) held += q.here ? 1 : 0;
      if (!work_since_[p]) work_since_[p] = now;
      auto due = *work_since_[p] + kFairStep * static_cast<int>(held);
      if (now < due) {
        // Looked at again when its turn comes, not at the next poll a takeover_interval away (review 5,
        // PP-5: after an idle shutdown, the first new event waited up to a second).
        if (!retake_at_ || due < *retake_at_) retake_at_ = due;
        return;
      }
      if (last_try_[p] && now - *last_try_[p] < o_.takeover_interval) return;
      last_try_[p] = now;
    }
    auto lease = models_.try_lease(part_key(p));
    if (!lease) return;
    {
      std::lock_guard lock(mu_);
      parts_[p].here = true;
      last_try_[p].reset();
    }
    if (o_.on_lease) o_.on_lease(p, true);
    auto w = std::make_unique<Worker>();
    w->lease = std::move(lease);
    Worker& ref = *w;
    w->thread = std::jthread([this, p, &ref](std::stop_token stop) {
      work(p, *ref.lease, stop);
      ref.ended = true;
    });
    workers_[p] = std::move(w);
  }

  void reap() {
    for (std::uint32_t p = 0; p < workers_.size(); ++p) {
      if (workers_[p] && workers_[p]->ended) release(p);
    }
  }

  void release(std::uint32_t p) {
    workers_[p]->thread.request_stop();
    workers_[p]->thread.join();
    workers_[p].reset();  // lets go of the lease
    {
      std::lock_guard lock(mu_);
      parts_[p].here = false;
      work_since_[p].reset();
      cv_.notify_all();
    }
    if (o_.on_lease) o_.on_lease(p, false);
  }

  void stop_workers() {
    for (auto& w : workers_) {
      if (w) w->thread.request_stop();
    }
    for (std::uint32_t p = 0; p < workers_.size(); ++p) {
      if (workers_[p]) release(p);
    }
  }

  void end_run(std::exception_ptr error) {
    std::lock_guard lock(mu_);
    running_ = false;
    error_ = error;
    total_.status = error ? ProjectionStatus::failed : ProjectionStatus::stopped;
    cv_.notify_all();
  }

  // ---- a worker ----

  struct Batch {
    ProjectionKey key;
    std::unique_ptr<ProjectionTransaction> tx;
    std::uint64_t committed = 0;
    std::uint64_t pending = 0;
    std::uint64_t first = 0;  // the open batch's first event
    std::size_t events = 0;
    std::optional<Clock::TimePoint> dirty_since;
    ProjectionStatus status = ProjectionStatus::catching_up;
    std::string last_error;
    std::uint32_t attempts = 0;
    std::uint64_t fail_at = 0;  // the event that failed last: applied in a batch of its own
    // After a failed commit of several events: the partition's events through here go one per batch.
    std::uint64_t split_through = 0;
    bool alone = false;         // the open batch is one event applied alone (b.failing)
    bool reading = false;       // in the subscription's read of the log
    std::uint32_t outages = 0;  // store failures in a row that were not the partition's (see outage())
    std::optional<RecordedEvent> failing;
    std::string context;
  };
  enum class Outcome { idle, stopped, lost };

  void work(std::uint32_t p, ProjectionLease& lease, std::stop_token stop) {
    Batch b;
    b.key = part_key(p);
    try {
      auto saved = models_.load_state(b.key);
      // Failed: waits for a retry or skip. Retired (blue/green switched a newer version in): the fence
      // refuses every commit of it, so there is nothing to work on.
      if (saved && (saved->status == ProjectionStatus::failed || saved->status == ProjectionStatus::retired)) {
        publish(p, b, saved->status);
        return;
      }
      b.committed = saved ? saved->checkpoint.value() : 0;
      if (saved) {
        b.last_error = saved->last_error;
        b.attempts = saved->attempts;
      }
      b.status = saved && saved->status == ProjectionStatus::rebuilding ? ProjectionStatus::rebuilding
                                                                        : ProjectionStatus::catching_up;
      {
        // The row, not what this process knew before (a rebuild elsewhere may have reset it).
        std::lock_guard lock(mu_);
        known_set(p, b.committed);
      }
    } catch (const std::exception& e) {
      o_.log(fmt::format("sourced: {}: cannot read its state: {}", key_text(b.key), e.what()));
      return;
    }
    for (;;) {
      try {
        Outcome how = follow(p, b, lease, stop);
        if (how == Outcome::lost) {
          o_.log(fmt::format("sourced: {}: lease lost; letting the partition go", key_text(b.key)));
          return;
        }
        if (how == Outcome::stopped) b.status = ProjectionStatus::stopped;
        if (b.tx || b.pending > b.committed || how == Outcome::stopped) commit(p, b);
        return;
      } catch (const LostOwnership& e) {
        b.tx.reset();
        o_.log(fmt::format("sourced: {}", e.what()));
        return;
      } catch (...) {
        auto error = std::current_exception();
        b.tx.reset();  // rolls the batch back
        if (b.reading || store_outage(error)) {
          if (!outage(p, b, lease, error, stop)) return;
          continue;
        }
        std::uint64_t at = b.failing ? b.failing->position.value() : b.pending;
        // Only the handler throwing on the first event of a batch, or a batch of one event applied alone,
        // says which event fails. Any other failure of a batch that held the partition's events (a failed
        // commit, or a throw that may need the events before it committed first) is narrowed down before
        // the partition may stop, whatever max_attempts: at once, what precedes a throwing event is
        // committed and the event applied alone; after a failed commit, the batch's events are applied one
        // by one. So the error row names the event that really fails, the checkpoint is just before it,
        // and a skip skips only that event (review 5, PP-1).
        bool narrow = !b.alone && b.events > 0;
        if (narrow && !b.failing) b.split_through = std::max(b.split_through, at);
        b.alone = false;
        b.attempts = at == b.fail_at ? b.attempts + 1 : 1;
        b.fail_at = at;
        b.last_error = b.context.empty() ? describe(error) : b.context + ": " + describe(error);
        b.context.clear();
        bool stopping = stop.stop_requested();
        bool give_up = !narrow && b.attempts >= o_.max_attempts;
        auto delay = narrow ? milliseconds(0) : backoff(b.attempts);
        o_.log(fmt::format("sourced: {}: {} (attempt {}); {}", key_text(b.key), b.last_error, b.attempts,
                           stopping  ? "stopping"
                           : give_up ? "the partition stops"
                                     : fmt::format("retrying in {} ms", delay.count())));
        b.status = stopping  ? ProjectionStatus::stopped
                   : give_up ? ProjectionStatus::failed
                             : ProjectionStatus::retrying;
        record_failure(b, give_up && !stopping);
        publish(p, b, b.status);
        if (stopping || give_up) return;
        wait_on(clock_, delay, stop);
        if (stop.stop_requested()) return;
        b.failing.reset();
      }
    }
  }

  // A broken connection, or a store error that says repeating may succeed (SQLite busy past its timeout;
  // PostgreSQL deadlock, serialization failure, lock or statement timeout, a session the server ended):
  // contention or an outage, not the event's fault, wherever in the batch it came from. Counted towards
  // max_attempts, a few deadlocks in a row between partitions writing the same rows would stop a partition
  // for an operator to retry.
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

  static bool holds(ProjectionLease& lease) {
    try {
      return lease.held();
    } catch (const std::exception&) {
      return false;  // cannot tell: the fence keeps a mistaken guess harmless, letting go only costs time
    }
  }

  // A failed read of the log, or a store outage anywhere (store_outage()), is neither the handler's nor the
  // event's fault (review 5, PP-2): it does not count towards max_attempts and never stops the partition; the
  // worker backs off (retry_initial doubling up to retry_max) and tries again until the store is back.
  // False when the worker is to end (stopped, or its lease went with the connection).
  bool outage(std::uint32_t p, Batch& b, ProjectionLease& lease, std::exception_ptr error, std::stop_token stop) {
    if (b.reading) {
      b.last_error = fmt::format("reading the log after position {}: {}", b.pending, describe(error));
    } else {
      b.last_error = b.context.empty() ? describe(error) : b.context + ": " + describe(error);
    }
    b.reading = false;
    b.alone = false;
    b.failing.reset();
    b.context.clear();
    ++b.outages;
    bool stopping = stop.stop_requested();
    auto delay = backoff(b.outages);
    o_.log(fmt::format("sourced: {}: {} (a store failure, {} in a row); {}", key_text(b.key), b.last_error, b.outages,
                       stopping ? "stopping" : fmt::format("retrying in {} ms", delay.count())));
    b.status = stopping ? ProjectionStatus::stopped : ProjectionStatus::retrying;
    record_failure(b, false);
    publish(p, b, b.status);
    if (stopping) return false;
    wait_on(clock_, delay, stop);
    if (stop.stop_requested()) return false;
    if (!holds(lease)) {
      o_.log(fmt::format("sourced: {}: lease lost; letting the partition go", key_text(b.key)));
      return false;
    }
    return true;
  }

  milliseconds backoff(std::uint32_t attempts) const {
    milliseconds d = o_.retry_initial;
    for (std::uint32_t i = 1; i < attempts && d < o_.retry_max; ++i) d *= 2;
    return std::min(d, o_.retry_max);
  }

  // The state row (and, when the partition stops, its error row) in a transaction of its own, fenced:
  // best effort, as a store that cannot save this cannot save anything else, and the log has it.
  void record_failure(Batch& b, bool stops) {
    try {
      auto tx = begin();
      auto at = now();
      ProjectionState row{b.key, Position(b.committed), b.status, b.last_error, b.attempts, at};
      if (!tx->save_state_if(row, Position(b.committed))) return;  // the partition is someone else's now
      if (stops) {
        ProjectionError e;
        e.key = b.key;
        e.position = Position(b.fail_at);
        if (b.failing) {
          e.event_id = b.failing->id.to_string();
          e.stream = b.failing->stream;
          e.event_type = b.failing->type;
        }
        e.message = b.last_error;
        e.attempts = b.attempts;
        e.failed_at = at;
        tx->record_error(e);
      }
      tx->commit();
    } catch (const std::exception& e) {
      o_.log(fmt::format("sourced: {}: could not record its failure: {}", key_text(b.key), e.what()));
    }
  }

  Outcome follow(std::uint32_t p, Batch& b, ProjectionLease& lease, std::stop_token stop) {
    b.reading = true;
    auto sub = subscribe_to_all(events_, {.start = SubscriptionStart::after(Position(b.committed)),
                                          .filter = p_.filter,
                                          .checkpoint_interval = p_.filter ? 1u : 0u});
    b.reading = false;
    b.pending = b.committed;
    b.events = 0;
    b.dirty_since.reset();
    bool live = false;
    auto last_activity = clock_.now();
    auto lease_checked = clock_.now();
    publish(p, b, b.status);
    while (!stop.stop_requested()) {
      auto now = clock_.now();
      if (now - lease_checked >= kLeaseCheck) {
        lease_checked = now;
        if (!holds(lease)) return Outcome::lost;
      }
      milliseconds wait = kStopCheck;
      if (b.tx && live) {
        wait = milliseconds(0);
      } else if (b.dirty_since) {
        auto left = std::chrono::duration_cast<milliseconds>(*b.dirty_since + o_.batch_interval - now);
        wait = std::clamp(left, milliseconds(0), kStopCheck);
      }
      b.reading = true;
      auto m = sub.next(wait);
      b.reading = false;
      if (!m) {
        if (b.tx && (live || clock_.now() - *b.dirty_since >= o_.batch_interval)) commit(p, b);
        if (live && !b.tx && clock_.now() - last_activity >= o_.idle_shutdown) return Outcome::idle;
        continue;
      }
      switch (m->kind) {
        case SubscriptionMessage::Kind::event: {
          const RecordedEvent& e = *m->event;
          if (partition_of(e) != p) {
            scanned(p, b, e.position.value());
            break;
          }
          std::uint64_t pos = e.position.value();
          if (pos == b.fail_at || pos <= b.split_through) {
            // The event that failed before (or each event of a batch whose commit failed) goes in a batch
            // of its own, after what precedes it is committed: when the partition stops, its checkpoint is
            // just before that event, and a failed commit of that batch is this event's failure.
            if (b.tx) commit(p, b);
            apply(b, e);
            b.failing = e;
            b.alone = true;
            commit(p, b);
            b.alone = false;
            b.failing.reset();
          } else {
            apply(b, e);
          }
          last_activity = clock_.now();
          break;
        }
        case SubscriptionMessage::Kind::checkpoint:
          scanned(p, b, m->checkpoint);
          break;
        case SubscriptionMessage::Kind::caught_up:
          scanned(p, b, m->checkpoint);
          live = true;
          last_activity = clock_.now();
          if (b.status != ProjectionStatus::following) {
            b.status = ProjectionStatus::following;
            commit(p, b);
          }
          break;
        case SubscriptionMessage::Kind::fell_behind:
          live = false;
          break;
      }
      if (b.dirty_since && (b.events >= o_.batch_events || clock_.now() - *b.dirty_since >= o_.batch_interval ||
                            (live && !sub.has_buffered() && awaited(b)))) {
        commit(p, b);
      }
    }
    return Outcome::stopped;
  }

  // Whether a wait_for() is pending for a position this partition has read through but whose events of
  // this partition are not all committed: one at or after the open batch's first event and at or before
  // where the worker has read. Asked once the events already read are applied (the rest of the page), so
  // a waiter pays about one read and one commit per partition, and many waiters share a commit; a waiter
  // past what was read is served by the commit after the read that reaches it. Without this, a worker
  // that keeps finding new events (a busy log) commits only at the batch's size or time limit. Only while
  // live: catching up, the commit at `caught_up` (or the batch's limits) serves the waiter, and a commit
  // just before it would be a second one.
  bool awaited(const Batch& b) const {
    if (!b.tx || b.events == 0 || latest_waited_.load(std::memory_order_relaxed) < b.first) return false;
    std::lock_guard lock(mu_);
    auto it = waiting_.lower_bound(b.first);
    return it != waiting_.end() && *it <= b.pending;
  }

  void apply(Batch& b, const RecordedEvent& e) {
    b.failing = e;
    if (!b.tx) {
      b.context = "starting a batch";
      b.first = e.position.value();
      b.tx = begin();
      if (p_.begin_batch) p_.begin_batch(*b.tx);
    }
    b.context = fmt::format("applying position {} (stream '{}', type '{}', id {})", e.position.value(), e.stream,
                            e.type, e.id.to_string());
    p_.handle(*b.tx, e);
    b.context.clear();
    b.failing.reset();
    b.pending = e.position.value();
    ++b.events;
    if (!b.dirty_since) b.dirty_since = clock_.now();
  }

  // Positions of other partitions' events (or filtered out): the next commit saves them, but they alone
  // do not make one.
  void scanned(std::uint32_t p, Batch& b, std::uint64_t through) {
    if (through <= b.pending) return;
    b.pending = through;
    if (!b.tx) {
      std::lock_guard lock(mu_);
      std::uint64_t before = parts_[p].processed;
      parts_[p].processed = std::max(before, through);
      if (passes_a_waiter(before, through)) cv_.notify_all();
    }
  }

  // Whether a wait_for() waits for a position in (from, to] (under mu_). The coordinator and the workers
  // move forward by every event they read, thousands of times a second; waking every waiter at each (to
  // look at every partition and sleep again) took cores from the readers (bench follow, partitioned).
  bool passes_a_waiter(std::uint64_t from, std::uint64_t to) const {
    auto it = waiting_.upper_bound(from);
    return it != waiting_.end() && *it <= to;
  }

  void commit(std::uint32_t p, Batch& b) {
    if (b.tx && p_.end_batch && b.events > 0) {
      b.context = fmt::format("ending the batch through position {}", b.pending);
      p_.end_batch(*b.tx);
    }
    b.context = fmt::format("committing the batch through position {}", b.pending);
    if (!b.tx) b.tx = begin();
    // A run of failures ends once the batch that holds the failing event commits.
    bool past = b.pending >= b.fail_at;
    ProjectionState row{b.key, Position(b.pending), b.status, b.last_error, past ? 0u : b.attempts, now()};
    if (!b.tx->save_state_if(row, Position(b.committed))) throw LostOwnership(b.key, Position(b.committed));
    b.tx->commit();
    b.tx.reset();
    b.context.clear();
    b.outages = 0;
    if (past) {
      b.attempts = 0;
      b.fail_at = 0;
    }
    b.committed = b.pending;
    {
      std::lock_guard lock(mu_);
      total_.events_applied += b.events;
    }
    b.events = 0;
    b.dirty_since.reset();
    publish(p, b, b.status);
  }

  void publish(std::uint32_t p, const Batch& b, ProjectionStatus status) {
    std::lock_guard lock(mu_);
    Part& part = parts_[p];
    part.processed = std::max(part.processed, b.committed);
    part.stored = std::max(part.stored, b.committed);
    part.status = status;
    if (status != ProjectionStatus::failed) {
      part.failed_at = 0;
    } else if (b.fail_at != 0) {
      part.failed_at = b.fail_at;
    }
    part.last_error = b.last_error;
    cv_.notify_all();
  }

  // ---- progress ----

  void tick(Clock::TimePoint now, bool live) {
    if (now - head_read_ < milliseconds(250) && head_read_ != Clock::TimePoint()) return;
    head_read_ = now;
    std::uint64_t head = events_.head_position().value();
    PartitionedProgress shown;
    {
      std::lock_guard lock(mu_);
      total_.head = Position(head);
      total_.live = live;
      if (total_.status != ProjectionStatus::failed && total_.status != ProjectionStatus::stopped) {
        total_.status = live ? ProjectionStatus::following : total_.status;
      }
      shown = progress_locked();
      std::uint64_t pos = shown.total.position.value();
      samples_.emplace_back(now, pos);
      while (samples_.size() > 2 && now - samples_.front().first > kRateWindow) samples_.pop_front();
      double dt = std::chrono::duration<double>(samples_.back().first - samples_.front().first).count();
      if (dt >= 0.2) {
        total_.events_per_second = static_cast<double>(samples_.back().second - samples_.front().second) / dt;
      }
      if (head <= pos) {
        total_.eta = std::chrono::seconds(0);
      } else if (total_.events_per_second > 0) {
        total_.eta =
            std::chrono::seconds(static_cast<std::int64_t>(std::ceil((head - pos) / total_.events_per_second)));
      } else {
        total_.eta.reset();
      }
      shown.total.events_per_second = total_.events_per_second;
      shown.total.eta = total_.eta;
    }
    if (o_.progress == ProgressDisplay::none) return;
    if (live) {
      finish_display("caught up");
      return;
    }
    auto every = bar_ ? kBarRefresh : o_.progress_interval;
    if (displayed_ && now - last_display_ < every) return;
    if (!displayed_ && !bar_ && now - run_started_ < std::min(every, milliseconds(1000))) return;
    last_display_ = now;
    displayed_ = true;
    std::uint64_t pos = shown.total.position.value(), top = std::max(head, pos);
    double fraction = top == 0 ? 1.0 : static_cast<double>(pos) / static_cast<double>(top);
    int working = 0;
    for (auto& part : shown.partitions) working += part.worked_here ? 1 : 0;
    std::string text =
        fmt::format("projection {} v{} ({} partitions, {} here): {}/{} ({:.1f}%), {} ev/s, ETA {}", p_.key.name,
                    p_.key.version, o_.partitions, working, with_commas(pos), with_commas(top), 100 * fraction,
                    with_commas(static_cast<std::uint64_t>(shown.total.events_per_second)),
                    shown.total.eta ? fmt::format("{}s", shown.total.eta->count()) : "?");
    if (bar_) {
      constexpr int kWidth = 30;
      int filled = static_cast<int>(fraction * kWidth);
      fmt::print(o_.progress_stream, "\r[{}{}] {}\x1b[K", std::string(filled, '#'), std::string(kWidth - filled, '.'),
                 text);
    } else {
      fmt::print(o_.progress_stream, "{}\n", text);
    }
    std::fflush(o_.progress_stream);
  }

  void finish_display(std::string_view how) {
    if (!displayed_) return;
    std::uint64_t pos = progress().total.position.value();
    double secs = std::chrono::duration<double>(clock_.now() - run_started_).count();
    fmt::print(o_.progress_stream, "{}projection {} v{}: {} at position {} ({} positions in {:.1f} s)\n",
               bar_ ? "\r\x1b[K" : "", p_.key.name, p_.key.version, how, with_commas(pos),
               with_commas(pos - std::min(pos, run_start_position_)), secs);
    std::fflush(o_.progress_stream);
    displayed_ = false;
  }

  EventStore& events_;
  ProjectionStore& models_;
  detail::ErasedProjection p_;
  PartitionedRunnerOptions o_;
  Clock& clock_;
  bool bar_ = false;
  std::uint32_t rotate_ = 0;

  // The coordinator's own.
  std::vector<std::unique_ptr<Worker>> workers_;
  std::map<std::uint32_t, std::optional<Clock::TimePoint>> last_try_;
  std::optional<Clock::TimePoint> retake_at_;  // when a partition held back for fairness may be taken
  Clock::TimePoint head_read_{};
  Clock::TimePoint run_started_{};
  Clock::TimePoint last_display_{};
  std::uint64_t run_start_position_ = 0;
  bool displayed_ = false;
  std::deque<std::pair<Clock::TimePoint, std::uint64_t>> samples_;

  // Shared, under mu_.
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Part> parts_;
  std::map<std::uint32_t, std::optional<Clock::TimePoint>> work_since_;
  // The positions wait_for() calls are waiting for (one entry per call), and the largest of them for the
  // workers to read without the lock (0 when nobody waits).
  mutable std::multiset<std::uint64_t> waiting_;
  mutable std::atomic<std::uint64_t> latest_waited_{0};
  std::uint64_t watcher_pos_ = 0;
  // The coordinator has read every event after seen_from_ through watcher_pos_ (seen_from_ is kUnlimited
  // before it starts); rewind_: a checkpoint went back before seen_from_, it must read from there again.
  std::uint64_t seen_from_ = kUnlimited;
  bool rewind_ = false;
  ProjectionProgress total_;
  ProjectionStatus base_status_ = ProjectionStatus::catching_up;
  bool poll_now_ = false;
  bool running_ = true;
  std::exception_ptr error_;

  std::jthread thread_;  // last: stopped before the rest goes
};

PartitionedProjectionRunner::PartitionedProjectionRunner(EventStore& events, ProjectionStore& models,
                                                         detail::ErasedProjection projection,
                                                         PartitionedRunnerOptions options)
    : impl_(std::make_shared<Impl>(events, models, std::move(projection), std::move(options))) {
  impl_->start();
}
PartitionedProjectionRunner::~PartitionedProjectionRunner() { stop(); }
void PartitionedProjectionRunner::stop() { impl_->stop(); }
bool PartitionedProjectionRunner::running() const { return impl_->running(); }
bool PartitionedProjectionRunner::wait_until_stopped(std::chrono::milliseconds timeout) const {
  return impl_->wait_until_stopped(timeout);
}
std::exception_ptr PartitionedProjectionRunner::error() const { return impl_->error(); }
PartitionedProgress PartitionedProjectionRunner::progress() const { return impl_->progress(); }
WaitResult PartitionedProjectionRunner::wait_for(Position position, std::chrono::milliseconds timeout) const {
  return impl_->wait_for(position, timeout);
}
void PartitionedProjectionRunner::retry(std::uint32_t partition) { impl_->retry(partition); }
ProjectionError PartitionedProjectionRunner::skip(std::uint32_t partition) { return impl_->skip(partition); }
std::uint32_t PartitionedProjectionRunner::partition_of(const RecordedEvent& event) const {
  return impl_->partition_of(event);
}
const ProjectionKey& PartitionedProjectionRunner::key() const { return impl_->key(); }

}  // namespace sourced
