#include "sourced/projection.hpp"

#include <cstdio>

#include <fmt/format.h>

#include "projections/state_rows.hpp"
#include "sourced/error.hpp"
#include "sourced/projection_partitions.hpp"

namespace sourced {
namespace {
constexpr std::string_view kStatusNames[] = {"rebuilding", "catching_up", "following", "retrying",
                                             "stopped",    "failed",      "retired"};

}  // namespace

std::string_view to_string(ProjectionStatus status) { return kStatusNames[static_cast<int>(status)]; }

std::optional<ProjectionStatus> parse_projection_status(std::string_view text) {
  for (int i = 0; i < static_cast<int>(std::size(kStatusNames)); ++i) {
    if (kStatusNames[i] == text) return static_cast<ProjectionStatus>(i);
  }
  return std::nullopt;
}

std::string versioned_table(std::string_view stable, std::uint32_t version) {
  return fmt::format("{}_v{}", stable, version);
}

std::string ProjectionTransaction::table(std::string_view stable) const {
  if (!projection_) {
    throw InvalidArgument(
        fmt::format("table('{}'): this transaction belongs to no projection (the runner sets it)", stable));
  }
  return versioned_table(stable, projection_->version);
}

void ProjectionTransaction::show_table_as(std::string_view stable, std::string_view table) {
  throw InvalidArgument(
      fmt::format("this read-model store cannot show table '{}' as '{}': it has no blue/green switch", table, stable));
}

void ProjectionTransaction::drop_table(std::string_view table) {
  throw InvalidArgument(fmt::format("this read-model store cannot drop table '{}'", table));
}

void ProjectionTransaction::save_active_version(std::string_view name, std::uint32_t version) {
  throw InvalidArgument(
      fmt::format("this read-model store cannot record version {} of projection '{}' as active", version, name));
}

std::optional<std::uint32_t> ProjectionStore::active_version(std::string_view) { return std::nullopt; }
namespace {
InvalidArgument no_partitions(std::string_view what) {
  return InvalidArgument(fmt::format("this read-model store does not support partitions ({})", what));
}
}  // namespace

bool ProjectionTransaction::save_state_if(const ProjectionState&, Position) { throw no_partitions("fenced saves"); }
void ProjectionTransaction::record_error(const ProjectionError&) { throw no_partitions("error rows"); }
void ProjectionTransaction::resolve_errors(const ProjectionKey&, std::string_view, Timestamp) {
  throw no_partitions("error rows");
}
std::unique_ptr<ProjectionLease> ProjectionStore::try_lease(const ProjectionKey&) { throw no_partitions("leases"); }
std::vector<ProjectionError> ProjectionStore::list_errors(std::string_view) { return {}; }

void ProjectionStore::save_state(const ProjectionState& state) {
  auto tx = begin_transaction();
  tx->save_state(state);
  tx->commit();
}

}  // namespace sourced

namespace sourced::detail {

std::optional<Timestamp> parse_timestamp(std::string_view text) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  long us = 0;
  std::string copy(text);
  if (std::sscanf(copy.c_str(), "%d-%d-%dT%d:%d:%d.%ldZ", &y, &mo, &d, &h, &mi, &s, &us) != 7) return std::nullopt;
  std::chrono::year_month_day ymd{std::chrono::year(y), std::chrono::month(static_cast<unsigned>(mo)),
                                  std::chrono::day(static_cast<unsigned>(d))};
  if (!ymd.ok()) return std::nullopt;
  return Timestamp(std::chrono::sys_days(ymd)) + std::chrono::hours(h) + std::chrono::minutes(mi) +
         std::chrono::seconds(s) + std::chrono::microseconds(us);
}

std::uint64_t stable_hash(std::string_view bytes, std::uint64_t seed) {
  std::uint64_t h = seed;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::uint64_t lease_hash(const ProjectionKey& key) {
  std::uint64_t h = stable_hash(key.name);
  h = stable_hash(std::string_view("\0", 1), h);
  h = stable_hash(std::to_string(key.version), h);
  h = stable_hash(std::string_view("\0", 1), h);
  return stable_hash(key.partition, h);
}

}  // namespace sourced::detail
