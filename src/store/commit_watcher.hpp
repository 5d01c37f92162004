#pragma once
// CommitWatcher: a thread that notices commits made by other processes and calls back, so an engine can
// wake its wait_for_events_after() waiters promptly instead of at the next poll. How it notices is the
// engine's (`watch`); this class owns the thread and a wake-up descriptor to stop it. A notice is only a
// hint: waiters still re-read the head, and still poll, so a missed notice only delays.

#include <atomic>
#include <functional>
#include <thread>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace sourced::detail {

class CommitWatcher {
 public:
  // `watch(stop_fd)` runs on the thread until it returns; it must return soon after `stop_fd` becomes
  // readable (include it in its poll()). Started at once.
  explicit CommitWatcher(std::function<void(int stop_fd)> watch) : stop_fd_(::eventfd(0, EFD_CLOEXEC)) {
    thread_ = std::thread([this, watch = std::move(watch)] { watch(stop_fd_); });
  }
  CommitWatcher(const CommitWatcher&) = delete;
  CommitWatcher& operator=(const CommitWatcher&) = delete;
  ~CommitWatcher() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
    thread_.join();
    ::close(stop_fd_);
  }

  // Waits up to `timeout_ms` for `fd` (-1: none) to become readable; false when `stop_fd` is (stop).
  static bool wait(int stop_fd, int fd, int timeout_ms, bool* fd_ready = nullptr) {
    pollfd fds[2] = {{stop_fd, POLLIN, 0}, {fd, POLLIN, 0}};
    int n = ::poll(fds, fd >= 0 ? 2 : 1, timeout_ms);
    if (fd_ready) *fd_ready = n > 0 && fd >= 0 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP));
    return !(n > 0 && (fds[0].revents & POLLIN));
  }

 private:
  int stop_fd_;
  std::thread thread_;
};

}  // namespace sourced::detail
