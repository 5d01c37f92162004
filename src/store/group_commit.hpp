#pragma once
// GroupCommit: how an engine turns many concurrent writes into few commits. One thread at a time holds
// the writer role: it takes the longest prefix of the queue that fits the limits, hands it to the engine
// to run as one transaction (one commit, one sync), tells the engine it committed, and wakes exactly the
// requests it finished. Requests that arrive meanwhile queue and form the next group, so the commit
// rate, not the request rate, is what a sync limits.
//
// Who holds the role: a request that finds nothing running and nothing queued runs on its caller's
// thread, at once (a lone writer pays no thread hand-off: measured on PostgreSQL, 1 writer x 1 event,
// a dedicated thread cost ~220 us per append, -25%). Everything that queues behind a running group is
// taken by a dedicated writer thread, which, having committed, takes the next group at once instead of
// waking another thread to lead it (measured: 100 writers x 1 event, +10% on SQLite, +20% on PostgreSQL
// over leader/follower). The engine's hooks thus run on one thread at a time, each holder ordered after
// the previous one by this object's mutex, so engine state used only by the hooks (SQLite's write
// connection and stream cache) needs no lock of its own; and no exception can leave the queue without a
// writer, since the writer thread outlives every error and a caller gives the role back in a guard.

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <limits>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace sourced::detail {

// When a group stops growing. The first request of a group is always taken, however large, so a
// request over the limits still runs (alone) and none waits forever.
struct GroupLimits {
  std::size_t max_events = std::numeric_limits<std::size_t>::max();
  std::size_t max_appends = std::numeric_limits<std::size_t>::max();
  std::size_t max_bytes = std::numeric_limits<std::size_t>::max();
};

class GroupCommit {
 public:
  // One unit of work, owned by the caller of submit() (usually on its stack) and alive until submit()
  // returns. Engines derive from it to carry their input and result. The engine sets `error` to fail
  // this request alone; a request whose `error` is empty after its group succeeded.
  class Request {
   public:
    Request(std::size_t events, std::size_t bytes) : events_(events), bytes_(bytes) {}
    Request(const Request&) = delete;
    Request& operator=(const Request&) = delete;
    virtual ~Request() = default;

    std::size_t events() const { return events_; }
    std::size_t bytes() const { return bytes_; }

    std::exception_ptr error;

   private:
    friend class GroupCommit;
    std::size_t events_;
    std::size_t bytes_;
    Request* next_ = nullptr;  // the queue is intrusive: queueing allocates nothing
    bool done_ = false;        // guarded by mu_
    std::mutex mu_;
    std::condition_variable cv_;
  };

  // The engine's side. Hooks run on the thread holding the writer role, one call at a time.
  class Engine {
   public:
    // Whether `r` may join the group being formed (called in queue order once the limits allowed it;
    // `first` starts a new group, so an engine keeping per-group state resets it). Returning false ends
    // the group before `r`, which then starts the next one; the first request is taken whatever the
    // answer. Throwing ends the group before `r` too, or fails `r` alone when it was first.
    virtual bool admit(const Request& r, bool first) {
      (void)r;
      (void)first;
      return true;
    }
    // Runs the group in one transaction and sets the error of each request that failed. Returns nullptr
    // when the group is finished (committed, or failed as a whole), or the request that broke it: its
    // error is set, nothing of the group is committed, and the others run again without it (with their
    // errors cleared). An exception fails every request of the group that has no error yet.
    virtual Request* run(std::span<Request* const> group) = 0;
    // After each group (committed or not), before its requests are woken: where waiters for new events
    // and commit notifications hook in. Must not throw.
    virtual void committed(std::span<Request* const> group) noexcept { (void)group; }

   protected:
    ~Engine() = default;
  };

  // `engine` must outlive this object (or its stop()), and be ready to take requests from the first
  // submit(). The writer thread starts when a request first has to queue behind a running group.
  GroupCommit(Engine& engine, GroupLimits limits);
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;
  ~GroupCommit() { stop(); }

  // Runs `r` (alone at once when the component is idle, else queued for the writer thread), returns when
  // its group ran, and rethrows its error. Thread-safe. Throws StorageError after stop() began (the
  // request is then not run).
  void submit(Request& r);

  // Runs every request already queued, then joins the writer thread. Idempotent; call it before
  // destroying what the engine's hooks use.
  void stop();

  // How many requests wait for a group (not counting the one running): for tests and metrics.
  std::size_t queued();

 private:
  void run_writer();
  // Moves the next group from the queue to group_; called with mu_ held on a non-empty queue. Returns
  // the front request alone, failed, when not even it could be admitted.
  Request* take_group();
  // Runs `group` (reruns included) and wakes its requests.
  void run_group(std::span<Request*> group);
  static void finish(Request* r);

  Engine& engine_;
  GroupLimits limits_;
  std::mutex mu_;
  std::condition_variable writer_cv_;
  Request* head_ = nullptr;  // guarded by mu_
  Request* tail_ = nullptr;
  std::size_t queued_ = 0;
  bool active_ = false;  // a thread holds the writer role (runs a group)
  bool stopping_ = false;
  std::vector<Request*> group_;  // writer thread only
  std::thread writer_;           // started under mu_ by the first request that queues
};

}  // namespace sourced::detail
