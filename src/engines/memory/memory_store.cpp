#include "sourced/memory_store.hpp"

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "store/append_rules.hpp"
#include "store/commit_signal.hpp"
#include "store/filter.hpp"
#include "store/local_leases.hpp"
#include "store/subscription_rules.hpp"

namespace sourced {
namespace {

struct Stream {
  detail::StreamState state;
  std::vector<std::uint64_t> positions;  // positions[v - 1] is the position of version v
  Timestamp created_at;
  Timestamp updated_at;
};

struct State {
  std::shared_mutex mu;
  std::map<std::string, Stream, std::less<>> streams;
  std::deque<RecordedEvent> log;                // log[p - 1] is the event at position p
  std::unordered_map<Uuid, std::uint64_t> ids;  // event id -> position
};

class StreamPages final : public detail::PageSource {
 public:
  StreamPages(std::shared_ptr<State> state, std::string stream, std::uint64_t hidden_through)
      : state_(std::move(state)), stream_(std::move(stream)), hidden_(hidden_through) {}

  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    out.clear();
    std::shared_lock lock(state_->mu);
    auto it = state_->streams.find(stream_);
    if (it == state_->streams.end()) return;
    const auto& positions = it->second.positions;
    std::uint64_t last = positions.size();
    if (direction == Direction::forward) {
      for (std::uint64_t v = std::max(from, hidden_ + 1); v <= last && out.size() < limit; ++v) {
        out.push_back(state_->log[positions[v - 1] - 1]);
      }
    } else {
      for (std::uint64_t v = std::min(from, last); v > hidden_ && out.size() < limit; --v) {
        out.push_back(state_->log[positions[v - 1] - 1]);
      }
    }
  }

 private:
  std::shared_ptr<State> state_;
  std::string stream_;
  std::uint64_t hidden_;
};

class AllPages final : public detail::PageSource {
 public:
  AllPages(std::shared_ptr<State> state, std::optional<EventFilter> filter)
      : state_(std::move(state)), filter_(std::move(filter)) {}

  void fetch(std::uint64_t from, Direction direction, std::size_t limit, std::vector<RecordedEvent>& out) override {
    out.clear();
    std::shared_lock lock(state_->mu);
    std::uint64_t head = state_->log.size();
    // With a filter, `limit` bounds the events examined, and the scan says how far it went.
    auto take = [&](std::uint64_t p) {
      const RecordedEvent& e = state_->log[p - 1];
      if (!filter_ || filter_->matches(e.stream, e.type)) out.push_back(e);
    };
    std::size_t examined = 0;
    if (filter_) limit = std::max<std::size_t>(limit, 4096);
    if (direction == Direction::forward) {
      std::uint64_t p = std::max<std::uint64_t>(from, 1);
      scan_.last_key = p - 1;
      for (; p <= head && examined < limit; ++p, ++examined) take(p);
      scan_.last_key = p - 1;
      scan_.reached_end = p > head;
    } else {
      std::uint64_t p = std::min(from, head);
      scan_.last_key = p + 1;
      for (; p >= 1 && examined < limit; --p, ++examined) take(p);
      scan_.last_key = p + 1;
      scan_.reached_end = p < 1;
    }
  }
  std::optional<Scan> last_scan() const override {
    if (!filter_) return std::nullopt;
    return scan_;
  }

 private:
  std::shared_ptr<State> state_;
  std::optional<EventFilter> filter_;
  Scan scan_;
};

// The memory engine's subscriptions: a map under one mutex, and leases held in this process (a second
// consumer of this store object is refused or waits exactly as another process would be elsewhere).
class MemoryRegistry final : public SubscriptionRegistry {
 public:
  void create(const PersistentSubscriptionConfig& config) override {
    detail::validate_subscription_config(config);
    std::lock_guard lock(mu_);
    if (subs_.count(config.name)) throw SubscriptionExists(config.name);
    Sub s;
    s.id = s.info.id = ++last_id_;
    s.info.config = config;
    s.info.checkpoint = config.start_after;
    s.info.created_at = s.info.updated_at = now();
    subs_.emplace(config.name, std::move(s));
  }

  bool remove(std::string_view name) override {
    detail::validate_subscription_name(name);
    std::lock_guard lock(mu_);
    auto it = subs_.find(name);
    if (it == subs_.end()) return false;
    subs_.erase(it);
    return true;
  }

  std::optional<PersistentSubscriptionInfo> get(std::string_view name) override {
    detail::validate_subscription_name(name);
    std::lock_guard lock(mu_);
    auto it = subs_.find(name);
    if (it == subs_.end()) return std::nullopt;
    return info_of(it->second);
  }

  void update_limits(std::string_view name, std::uint32_t max_in_flight, std::uint32_t max_attempts) override {
    detail::validate_subscription_config(
        {.name = std::string(name), .max_in_flight = max_in_flight, .max_attempts = max_attempts});
    std::lock_guard lock(mu_);
    Sub& s = find(name);
    s.info.config.max_in_flight = max_in_flight;
    s.info.config.max_attempts = max_attempts;
    s.info.updated_at = now();
  }

  std::vector<PersistentSubscriptionInfo> list() override {
    std::lock_guard lock(mu_);
    std::vector<PersistentSubscriptionInfo> out;
    for (const auto& [name, s] : subs_) out.push_back(info_of(s));
    return out;
  }

  void save_progress(std::string_view name, const SubscriptionProgress& progress) override {
    detail::validate_subscription_name(name);
    detail::validate_progress(progress);
    Timestamp ts = now();
    std::lock_guard lock(mu_);
    Sub& s = find(name);
    if (progress.subscription_id != 0 && progress.subscription_id != s.id)
      throw SubscriptionNotFound(std::string(name));
    // Built aside and swapped in, so a failure (out of memory) leaves the stored state whole.
    auto parked = s.parked;
    for (auto key : progress.unparked) parked.erase(key);
    for (const auto& p : progress.newly_parked) parked.insert_or_assign(p.key, detail::parked_as_stored(p, ts));
    s.parked.swap(parked);
    s.info.checkpoint = detail::next_checkpoint(s.info.checkpoint, progress.checkpoint);
    s.info.in_flight = progress.in_flight;
    if (progress.last_error) s.info.last_error = *progress.last_error;
    s.info.updated_at = ts;
  }

  std::vector<ParkedEvent> parked(std::string_view name, std::uint64_t after_key, std::size_t limit) override {
    detail::validate_subscription_name(name);
    std::lock_guard lock(mu_);
    const Sub& s = find(name);
    std::vector<ParkedEvent> out;
    for (auto it = s.parked.upper_bound(after_key); it != s.parked.end() && out.size() < limit; ++it) {
      out.push_back(it->second);
    }
    return out;
  }

  std::uint64_t request_replay(std::string_view name) override {
    detail::validate_subscription_name(name);
    std::lock_guard lock(mu_);
    Sub& s = find(name);
    for (auto& [key, p] : s.parked) p.replay_requested = true;
    s.info.updated_at = now();
    return s.parked.size();
  }

  std::unique_ptr<SubscriptionLease> acquire(std::string_view name, bool wait, std::chrono::milliseconds timeout,
                                             std::stop_token stop) override {
    detail::validate_subscription_name(name);
    std::unique_ptr<SubscriptionLease> lease;
    std::uint64_t id = 0;
    bool taken = detail::poll_until(
        [&] {
          // Looked up at every try: a subscription deleted and created again meanwhile has a new id.
          id = find_id(name);
          lease = leases_.try_take(std::to_string(id), detail::this_process_holder(), id);
          return lease != nullptr;
        },
        wait, timeout, stop);
    if (!taken) {
      throw SubscriptionLocked(std::string(name),
                               leases_.holder(std::to_string(id)).value_or("a consumer that just left"));
    }
    return lease;
  }

  std::optional<std::string> holder(std::string_view name) override {
    detail::validate_subscription_name(name);
    std::lock_guard lock(mu_);
    auto it = subs_.find(name);
    if (it == subs_.end()) return std::nullopt;  // a subscription that does not exist has no holder
    return leases_.holder(std::to_string(it->second.id));
  }

 private:
  struct Sub {
    std::uint64_t id = 0;  // never reused, so a lease on a deleted subscription does not hold its successor
    PersistentSubscriptionInfo info;
    std::map<std::uint64_t, ParkedEvent> parked;
  };

  Sub& find(std::string_view name) {
    auto it = subs_.find(name);
    if (it == subs_.end()) throw SubscriptionNotFound(std::string(name));
    return it->second;
  }
  PersistentSubscriptionInfo info_of(const Sub& s) const {
    PersistentSubscriptionInfo info = s.info;
    info.parked = s.parked.size();
    if (!leases_.holder(std::to_string(s.id))) info.in_flight = 0;  // what a consumer that left reported
    return info;
  }
  std::uint64_t find_id(std::string_view name) {
    std::lock_guard lock(mu_);
    return find(name).id;
  }

  std::mutex mu_;
  std::map<std::string, Sub, std::less<>> subs_;
  std::uint64_t last_id_ = 0;
  detail::LocalLeases leases_;
};

class MemoryStore final : public EventStore {
 public:
  AppendResult append(std::string_view stream, ExpectedVersion expected, std::span<const EventData> events) override {
    auto prepared = detail::prepare_append(stream, events);
    std::unique_lock lock(state_->mu);
    auto it = state_->streams.find(stream);
    detail::StreamState current = it == state_->streams.end() ? detail::StreamState{} : it->second.state;
    auto lookup = [&](const Uuid& id) -> std::optional<detail::StoredLocation> {
      auto f = state_->ids.find(id);
      if (f == state_->ids.end()) return std::nullopt;
      const RecordedEvent& e = state_->log[f->second - 1];
      return detail::StoredLocation{e.stream, e.version, e.position};
    };
    if (auto replay = detail::check_replay(stream, current, expected, prepared, lookup)) return *replay;
    detail::check_expected(stream, current, expected);
    for (const auto& p : prepared) {
      if (!p.id_given && state_->ids.count(p.id)) {
        throw detail::generated_id_collision(stream);
      }
    }
    AppendResult result;
    result.first_version = current.last.next();
    result.last_version = current.last;
    if (prepared.empty()) return result;
    if (it == state_->streams.end()) {
      it = state_->streams.emplace(std::string(stream), Stream{}).first;
      it->second.created_at = now();
    }
    Stream& s = it->second;
    Timestamp ts = now();
    result.first_position = Position(state_->log.size() + 1);
    for (const auto& p : prepared) {
      RecordedEvent e;
      e.id = p.id;
      e.stream = std::string(stream);
      e.version = s.state.last.next();
      e.position = Position(state_->log.size() + 1);
      e.type = p.data->type;
      e.data = p.data->data;
      e.metadata = p.data->metadata;
      e.content_type = p.data->content_type;
      e.correlation_id = p.data->correlation_id;
      e.causation_id = p.data->causation_id;
      e.created_at = ts;
      s.state.last = e.version;
      s.positions.push_back(e.position.value());
      state_->ids.emplace(e.id, e.position.value());
      state_->log.push_back(std::move(e));
    }
    s.state.exists = true;
    s.updated_at = ts;
    result.last_version = s.state.last;
    result.last_position = Position(state_->log.size());
    lock.unlock();
    commit_signal_.committed();
    return result;
  }

  EventReader read_stream(std::string_view stream, ReadStreamOptions options) override {
    detail::validate_stream_id(stream);
    std::shared_lock lock(state_->mu);
    auto it = state_->streams.find(stream);
    detail::StreamState current = it == state_->streams.end() ? detail::StreamState{} : it->second.state;
    auto pages = std::make_shared<StreamPages>(state_, std::string(stream), current.hidden_through.value());
    return detail::make_stream_reader(stream, current, options, std::move(pages), kPageSize);
  }

  EventReader read_all(ReadAllOptions options) override {
    if (options.filter) detail::plan_filter(*options.filter);  // validates
    return detail::make_all_reader(options, std::make_shared<AllPages>(state_, options.filter), kPageSize);
  }

  std::optional<StreamInfo> stream_info(std::string_view stream) override {
    detail::validate_stream_id(stream);
    std::shared_lock lock(state_->mu);
    auto it = state_->streams.find(stream);
    if (it == state_->streams.end()) return std::nullopt;
    return detail::make_info(it->first, it->second.state, it->second.created_at, it->second.updated_at);
  }

  std::vector<StreamInfo> list_streams(std::string_view after, std::size_t limit) override {
    std::shared_lock lock(state_->mu);
    std::vector<StreamInfo> out;
    for (auto it = state_->streams.upper_bound(after); it != state_->streams.end() && out.size() < limit; ++it) {
      out.push_back(detail::make_info(it->first, it->second.state, it->second.created_at, it->second.updated_at));
    }
    return out;
  }

  void delete_stream(std::string_view stream, ExpectedVersion expected, DeleteMode mode) override {
    detail::validate_delete(stream);
    std::unique_lock lock(state_->mu);
    auto it = state_->streams.find(stream);
    detail::StreamState current = it == state_->streams.end() ? detail::StreamState{} : it->second.state;
    detail::StreamState after = detail::decide_delete(stream, current, expected, mode);
    if (it == state_->streams.end()) {
      it = state_->streams.emplace(std::string(stream), Stream{}).first;
      it->second.created_at = now();
    }
    it->second.state = after;
    it->second.updated_at = now();
  }

  Position head_position() override {
    std::shared_lock lock(state_->mu);
    return Position(state_->log.size());
  }

  ~MemoryStore() override { commit_signal_.close(); }

  Position wait_for_events_after(Position after, std::chrono::milliseconds timeout, std::stop_token stop) override {
    // Only this object writes its log, so every append wakes the waiters: no polling needed.
    return commit_signal_.wait(
        after, timeout, std::move(stop), [this] { return head_position(); },
        std::chrono::milliseconds(detail::kMaxWaitMs));
  }

  StoreStats stats() override {
    std::shared_lock lock(state_->mu);
    return StoreStats{"memory", state_->streams.size(), Position(state_->log.size())};
  }

  SubscriptionRegistry& subscriptions() override { return registry_; }

 private:
  static constexpr std::size_t kPageSize = 512;
  std::shared_ptr<State> state_ = std::make_shared<State>();
  detail::CommitSignal commit_signal_;
  MemoryRegistry registry_;
};

}  // namespace

std::unique_ptr<EventStore> open_memory_store() { return std::make_unique<MemoryStore>(); }

}  // namespace sourced
