#include "sourced/subscription.hpp"

#include <atomic>
#include <mutex>

#include "sourced/error.hpp"

namespace sourced {
namespace {
// How long a runner waits for a message in one call; its stop request ends the wait at once.
constexpr std::chrono::milliseconds kRunnerWait(60'000);
}  // namespace

// The state machine: a reader from `cursor_ + 1` delivers events (history and live alike); when it ends
// the subscription is caught up, and waits for the head to move past what it has read before reading
// again. Everything at or before `cursor_` has been delivered or filtered out, so reopening a reader from
// there can neither skip nor repeat an event, whichever side of the switch it is on.
class CatchUpSubscription::Impl {
 public:
  Impl(EventStore& store, std::optional<std::string> stream, SubscriptionOptions options)
      : store_(store), stream_(std::move(stream)), options_(std::move(options)) {
    if (stream_ && options_.filter) throw InvalidArgument("a filter applies to subscriptions to $all only");
    if (options_.filter)
      store_.read_all({.from = std::nullopt, .max_count = 0, .filter = options_.filter});  // checks it
    switch (options_.start.kind()) {
      case SubscriptionStart::Kind::origin:
        cursor_ = 0;
        break;
      case SubscriptionStart::Kind::after:
        cursor_ = options_.start.key();
        break;
      case SubscriptionStart::Kind::end:
        if (stream_) {
          auto info = store_.stream_info(*stream_);
          cursor_ = info ? info->last_version.value() : 0;
        } else {
          cursor_ = store_.head_position().value();
        }
        break;
    }
    notified_ = cursor_;
  }

  std::optional<SubscriptionMessage> next(std::chrono::milliseconds timeout, std::stop_token stop) {
    if (stop.stop_requested()) return std::nullopt;
    auto deadline = std::chrono::steady_clock::now() + std::min(timeout, std::chrono::milliseconds(kMaxWaitMs));
    for (;;) {
      if (!reader_) {
        if (live_) {
          // Live and at the end: wait for the head to move past what the last read saw. For `$all` the
          // reader looked through the head as it saw it; for a stream, the head was read before the
          // stream, so an append that landed in between ends the wait at once.
          std::uint64_t after = stream_ ? head_before_read_ : cursor_;
          auto now = std::chrono::steady_clock::now();
          auto wait = now >= deadline ? std::chrono::milliseconds(0)
                                      : std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                                            std::chrono::milliseconds(1);
          Position head = store_.wait_for_events_after(Position(after), wait, stop);
          if (head.value() <= after) {
            if (stop.stop_requested() || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
            continue;
          }
          // A stream cannot have grown by more than `$all` has since it was read, so only a large move of
          // the head is worth asking the stream's own head for.
          bool behind = stream_ ? head.value() > head_before_read_ + options_.max_live_lag && stream_behind()
                                : head.value() > cursor_ + options_.max_live_lag;
          if (behind) {
            // Too much arrived at once for a live subscriber: say so, and catch up again.
            live_ = false;
            return message(SubscriptionMessage::Kind::fell_behind, nullptr);
          }
        }
        open_reader();
      }
      if (fall_behind_next_) {
        fall_behind_next_ = false;
        live_ = false;
        return message(SubscriptionMessage::Kind::fell_behind, nullptr);
      }
      if (const RecordedEvent* e = !not_found_ ? reader_->try_next() : nullptr) {
        cursor_ = stream_ ? e->version.value() : e->position.value();
        notified_ = cursor_;
        if (live_ && ++since_lag_check_ >= kLagCheckEvery) {
          since_lag_check_ = 0;
          // The consumer keeps the reader busy, so no wait tells us the head: ask for it now and then.
          if (stream_ ? stream_behind() : store_.head_position().value() > cursor_ + options_.max_live_lag)
            fall_behind_next_ = true;
        }
        return message(SubscriptionMessage::Kind::event, e);
      }
      bool at_end = not_found_ || reader_->at_end();
      if (!not_found_ && !stream_) cursor_ = std::max(cursor_, reader_->scanned_through());
      if (options_.filter && options_.checkpoint_interval > 0 && cursor_ >= notified_ + options_.checkpoint_interval) {
        notified_ = cursor_;
        return message(SubscriptionMessage::Kind::checkpoint, nullptr);
      }
      if (!at_end) {
        // A page of events that all failed the filter.
        if (stop.stop_requested() || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        continue;
      }
      reader_.reset();
      if (!live_) {
        live_ = true;
        since_lag_check_ = 0;
        return message(SubscriptionMessage::Kind::caught_up, nullptr);
      }
    }
  }

  std::uint64_t checkpoint() const { return notified_checkpoint_; }
  bool live() const { return live_; }
  bool has_buffered() const { return reader_ && !not_found_ && !fall_behind_next_ && reader_->buffered() > 0; }

 private:
  static constexpr std::int64_t kMaxWaitMs = 1'000'000'000'000;
  static constexpr std::uint64_t kLagCheckEvery = 1024;

  // Whether the subscribed stream's last version is more than max_live_lag past the cursor.
  bool stream_behind() {
    auto info = store_.stream_info(*stream_);
    return info && info->last_version.value() > cursor_ + options_.max_live_lag;
  }

  void open_reader() {
    not_found_ = false;
    if (stream_) {
      head_before_read_ = store_.head_position().value();
      reader_.emplace(store_.read_stream(*stream_, {.from = StreamVersion(cursor_ + 1)}));
      not_found_ = reader_->state() == EventReader::State::stream_not_found;
    } else {
      reader_.emplace(store_.read_all({.from = Position(cursor_ + 1), .filter = options_.filter}));
    }
  }

  SubscriptionMessage message(SubscriptionMessage::Kind kind, const RecordedEvent* e) {
    notified_checkpoint_ = cursor_;
    return SubscriptionMessage{kind, e, cursor_};
  }

  EventStore& store_;
  std::optional<std::string> stream_;
  SubscriptionOptions options_;
  std::optional<EventReader> reader_;
  bool not_found_ = false;
  std::uint64_t cursor_ = 0;            // delivered or filtered out through here
  std::uint64_t notified_ = 0;          // the cursor at the last event or checkpoint notice
  std::uint64_t head_before_read_ = 0;  // streams: the `$all` head before the last read of the stream
  std::uint64_t notified_checkpoint_ = 0;
  std::uint64_t since_lag_check_ = 0;
  bool live_ = false;
  bool fall_behind_next_ = false;
};

CatchUpSubscription::CatchUpSubscription(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CatchUpSubscription::CatchUpSubscription(CatchUpSubscription&&) noexcept = default;
CatchUpSubscription& CatchUpSubscription::operator=(CatchUpSubscription&&) noexcept = default;
CatchUpSubscription::~CatchUpSubscription() = default;

std::optional<SubscriptionMessage> CatchUpSubscription::next(std::chrono::milliseconds timeout, std::stop_token stop) {
  return impl_->next(timeout, std::move(stop));
}
std::uint64_t CatchUpSubscription::checkpoint() const { return impl_->checkpoint(); }
bool CatchUpSubscription::live() const { return impl_->live(); }
bool CatchUpSubscription::has_buffered() const { return impl_->has_buffered(); }

CatchUpSubscription subscribe_to_all(EventStore& store, SubscriptionOptions options) {
  return CatchUpSubscription(std::make_unique<CatchUpSubscription::Impl>(store, std::nullopt, std::move(options)));
}

CatchUpSubscription subscribe_to_stream(EventStore& store, std::string_view stream, SubscriptionOptions options) {
  if (auto problem = stream_id_problem(stream)) throw InvalidArgument("invalid stream id: " + *problem);
  return CatchUpSubscription(
      std::make_unique<CatchUpSubscription::Impl>(store, std::string(stream), std::move(options)));
}

struct SubscriptionRunner::State {
  std::atomic<bool> running{true};
  mutable std::mutex mu;
  std::exception_ptr error;  // guarded by mu
};

SubscriptionRunner::SubscriptionRunner(CatchUpSubscription subscription, Handler handler)
    : state_(std::make_shared<State>()) {
  thread_ = std::jthread(
      [state = state_, sub = std::move(subscription), handler = std::move(handler)](std::stop_token stop) mutable {
        try {
          while (!stop.stop_requested()) {
            if (auto m = sub.next(kRunnerWait, stop)) handler(*m);
          }
        } catch (...) {
          std::lock_guard lock(state->mu);
          state->error = std::current_exception();
        }
        state->running = false;
      });
}

SubscriptionRunner::~SubscriptionRunner() { stop(); }

void SubscriptionRunner::stop() {
  thread_.request_stop();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

bool SubscriptionRunner::running() const { return state_->running; }

std::exception_ptr SubscriptionRunner::error() const {
  std::lock_guard lock(state_->mu);
  return state_->error;
}

}  // namespace sourced
