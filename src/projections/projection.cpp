#include "sourced/projection.hpp"

namespace sourced {
namespace {
constexpr std::string_view kStatusNames[] = {"rebuilding", "catching_up", "following", "retrying", "stopped", "failed"};

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

}  // namespace sourced
