#include "store/group_commit.hpp"

#include <algorithm>

#include "sourced/error.hpp"

namespace sourced::detail {
namespace {

// sum + add <= max, without overflow (a group's first request may alone exceed max).
bool fits(std::size_t sum, std::size_t add, std::size_t max) { return sum <= max && add <= max - sum; }

}  // namespace

GroupCommit::GroupCommit(Engine& engine, GroupLimits limits) : engine_(engine), limits_(limits) {
  if (limits_.max_appends == 0) limits_.max_appends = 1;
  // Growing beyond this allocates while a group forms; take_group() copes with that failing.
  group_.reserve(std::min<std::size_t>(limits_.max_appends, 1024));
  // The writer thread starts with the first request that has to queue: a process that writes alone (a
  // one-shot CLI append) never needs it, and starting a thread it would only join costs ~0.1 ms.
}

void GroupCommit::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  writer_cv_.notify_one();
  if (writer_.joinable()) writer_.join();
}

void GroupCommit::submit(Request& r) {
  bool inline_run = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) throw StorageError("the store is closing: the write was not attempted");
    r.next_ = nullptr;
    r.done_ = false;
    if (!active_ && !head_) {
      active_ = true;  // idle: this thread takes the writer role for its own request
      inline_run = true;
    } else {
      // Started before the request joins the queue, so a failure to start it leaves nothing behind.
      if (!writer_.joinable()) writer_ = std::thread([this] { run_writer(); });
      if (tail_) {
        tail_->next_ = &r;
      } else {
        head_ = &r;
      }
      tail_ = &r;
      ++queued_;
      if (!active_) writer_cv_.notify_one();
    }
  }
  if (inline_run) {
    // Gives the role back however the run ends, handing what queued meanwhile to the writer thread.
    struct Release {
      GroupCommit* self;
      ~Release() {
        std::lock_guard lock(self->mu_);
        self->active_ = false;
        if (self->head_ || self->stopping_) self->writer_cv_.notify_one();
      }
    } release{this};
    bool admitted = false;
    try {
      engine_.admit(r, true);
      admitted = true;
    } catch (...) {
      r.error = std::current_exception();
    }
    if (admitted) {
      Request* group[] = {&r};
      run_group(group);
    }
  } else {
    std::unique_lock lock(r.mu_);
    r.cv_.wait(lock, [&] { return r.done_; });
  }
  if (r.error) std::rethrow_exception(r.error);
}

std::size_t GroupCommit::queued() {
  std::lock_guard lock(mu_);
  return queued_;
}

void GroupCommit::run_writer() {
  std::unique_lock lock(mu_);
  for (;;) {
    writer_cv_.wait(lock, [&] { return !active_ && (head_ != nullptr || stopping_); });
    // On stop, what is queued still runs: its callers are waiting for an answer.
    if (!head_) return;
    active_ = true;
    Request* refused = take_group();
    lock.unlock();
    if (refused) {
      finish(refused);
    } else {
      run_group(group_);
    }
    lock.lock();
    active_ = false;
  }
}

GroupCommit::Request* GroupCommit::take_group() {
  // The group is built before anything leaves the queue, so an exception (allocation, a hook) loses
  // no request.
  group_.clear();
  std::size_t events = 0, bytes = 0;
  for (Request* r = head_; r; r = r->next_) {
    bool first = group_.empty();
    if (!first && (group_.size() >= limits_.max_appends || !fits(events, r->events_, limits_.max_events) ||
                   !fits(bytes, r->bytes_, limits_.max_bytes))) {
      break;
    }
    try {
      if (!engine_.admit(*r, first) && !first) break;
      group_.push_back(r);
    } catch (...) {
      if (!first) break;
      r->error = std::current_exception();
      head_ = r->next_;
      if (!head_) tail_ = nullptr;
      --queued_;
      return r;
    }
    events += r->events_;
    bytes += r->bytes_;
  }
  head_ = group_.back()->next_;
  if (!head_) tail_ = nullptr;
  queued_ -= group_.size();
  return nullptr;
}

void GroupCommit::run_group(std::span<Request*> group) {
  std::size_t n = group.size();
  for (;;) {
    auto live = group.first(n);
    Request* broken = nullptr;
    try {
      broken = engine_.run(live);
    } catch (...) {
      auto error = std::current_exception();
      for (Request* r : live) {
        if (!r->error) r->error = error;
      }
    }
    auto it = std::find(live.begin(), live.end(), broken);
    if (!broken || it == live.end()) break;
    // Nothing of the group committed: the request that broke it is answered now, the rest run again.
    std::move(it + 1, live.end(), it);
    --n;
    if (!broken->error) {
      broken->error = std::make_exception_ptr(StorageError("internal error: a write broke its group without an error"));
    }
    finish(broken);
    for (Request* r : group.first(n)) r->error = nullptr;
    if (n == 0) break;
  }
  engine_.committed(group.first(n));
  // Each request is woken under its own mutex, which keeps it alive until the notify returns, so waking
  // a large group never holds up the threads queueing the next one.
  for (Request* r : group.first(n)) finish(r);
}

void GroupCommit::finish(Request* r) {
  std::lock_guard lock(r->mu_);
  r->done_ = true;
  r->cv_.notify_one();
}

}  // namespace sourced::detail
