#include "sourced/projection.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>

namespace sourced {
namespace {
constexpr std::string_view kStatusNames[] = {"rebuilding", "catching_up", "following", "retrying", "stopped", "failed"};

class SystemClock final : public ProjectionClock {
 public:
  std::chrono::steady_clock::time_point now() override { return std::chrono::steady_clock::now(); }
  void sleep_for(std::chrono::milliseconds d, std::stop_token stop) override {
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop, d, [] { return false; });
  }
};
}  // namespace

std::string_view to_string(ProjectionStatus status) { return kStatusNames[static_cast<int>(status)]; }

std::optional<ProjectionStatus> parse_projection_status(std::string_view text) {
  for (int i = 0; i < static_cast<int>(std::size(kStatusNames)); ++i) {
    if (kStatusNames[i] == text) return static_cast<ProjectionStatus>(i);
  }
  return std::nullopt;
}

void ProjectionStore::save_state(const ProjectionState& state) {
  auto tx = begin_transaction();
  tx->save_state(state);
  tx->commit();
}

ProjectionClock& ProjectionClock::system() {
  static SystemClock clock;
  return clock;
}

}  // namespace sourced
