#include "sourced/projection_cli.hpp"

#include <charconv>
#include <iostream>
#include <map>
#include <optional>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sourced/error.hpp"

namespace sourced {
namespace {

constexpr int kOk = 0;
constexpr int kFailure = 1;
constexpr int kBadInput = 2;

// Input the user got wrong (exit code 2).
struct BadInput : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string known_names(const ProjectionCli& cli) {
  std::string names;
  for (const auto& e : cli.projections) names += (names.empty() ? "" : ", ") + e.name;
  return names.empty() ? "none" : names;
}

const ProjectionCommandEntry* find_entry(const ProjectionCli& cli, const std::string& name) {
  for (const auto& e : cli.projections) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

// The key of NAME's PARTITION: the version of the application's definition, or else the newest one the
// read-model database has rows of; the partition checked against the definition's partition count.
ProjectionKey key_of(const ProjectionCli& cli, ProjectionStore& models, const std::string& name,
                     const std::string& partition) {
  ProjectionKey key{name, 0, partition};
  if (const auto* e = find_entry(cli, name)) {
    key.version = e->version;
    if (e->partitions > 0) {
      std::uint64_t p = 0;
      auto [end, ec] = std::from_chars(partition.data(), partition.data() + partition.size(), p);
      if (partition.empty() || ec != std::errc() || end != partition.data() + partition.size() || p >= e->partitions) {
        throw BadInput(fmt::format("projection '{}' has partitions 0 to {}; '{}' is not one of them", name,
                                   e->partitions - 1, partition));
      }
    } else if (!partition.empty()) {
      throw BadInput(fmt::format("projection '{}' is not partitioned: give no partition, not '{}'", name, partition));
    }
    return key;
  }
  for (const auto& s : models.list_states()) {
    if (s.key.name == name) key.version = std::max(key.version, s.key.version);
  }
  if (key.version == 0) {
    throw BadInput(fmt::format("no projection '{}' here (this application has: {}; the database has no rows of it)",
                               name, known_names(cli)));
  }
  return key;
}

// Runs `f` and turns what it throws into an exit code and a message.
int guarded(std::ostream& err, const std::function<int()>& f) {
  try {
    return f();
  } catch (const BadInput& e) {
    err << "error: " << e.what() << "\n";
    return kBadInput;
  } catch (const InvalidArgument& e) {
    err << "error: " << e.what() << "\n";
    return kBadInput;
  } catch (const std::exception& e) {
    err << "error: " << e.what() << "\n";
    return kFailure;
  }
}

}  // namespace

void list_projections(EventStore& events, ProjectionStore& models, std::ostream& out) {
  std::uint64_t head = events.head_position().value();
  std::map<std::tuple<std::string, std::uint32_t, std::string>, int> open_errors;
  for (const auto& e : models.list_errors()) {
    if (e.resolution.empty()) ++open_errors[{e.key.name, e.key.version, e.key.partition}];
  }
  for (const auto& s : models.list_states()) {
    nlohmann::json j;
    j["name"] = s.key.name;
    j["version"] = s.key.version;
    j["partition"] = s.key.partition;
    j["checkpoint"] = s.checkpoint.value();
    j["head"] = head;
    j["lag"] = head > s.checkpoint.value() ? head - s.checkpoint.value() : 0;
    j["status"] = std::string(to_string(s.status));
    auto it = open_errors.find({s.key.name, s.key.version, s.key.partition});
    j["errors"] = it == open_errors.end() ? 0 : it->second;
    j["attempts"] = s.attempts;
    j["last_error"] = s.last_error;
    j["updated_at"] = format_timestamp(s.updated_at);
    out << j.dump() << "\n";
  }
  out.flush();
  if (!out) throw StorageError("could not write the projection list to the output");
}

std::vector<CLI::App*> add_projection_commands(CLI::App& app, ProjectionCli cli, std::function<int()>& action) {
  if (!cli.out) cli.out = &std::cout;
  if (!cli.err) cli.err = &std::cerr;
  if (!cli.with_stores) throw InvalidArgument("the projection commands need with_stores");
  auto shared = std::make_shared<ProjectionCli>(std::move(cli));
  std::ostream& out = *shared->out;  // the streams outlive the command line (the caller's or std's)
  std::ostream& err = *shared->err;
  auto args = std::make_shared<std::pair<std::string, std::string>>();  // NAME, PARTITION

  auto* list = app.add_subcommand(
      "projections",
      "List the projections of the read-model database as JSON lines (checkpoint, head, lag, status, "
      "open errors)");
  list->callback([&action, shared, &out, &err] {
    action = [shared, &out, &err] {
      return guarded(err, [&] {
        return shared->with_stores([&](EventStore& events, ProjectionStore& models) {
          list_projections(events, models, out);
          return kOk;
        });
      });
    };
  });

  auto* projection = app.add_subcommand("projection", "Rebuild a projection, or retry or skip a failed partition");
  projection->require_subcommand(1);
  auto* rebuild = projection->add_subcommand(
      "rebuild", "Clear a projection's model and replay the log (a progress bar on a terminal)");
  rebuild->add_option("name", args->first, "The projection")->required();
  rebuild->callback([&action, shared, args, &out, &err] {
    action = [shared, args, &out, &err] {
      return guarded(err, [&] {
        const auto* entry = find_entry(*shared, args->first);
        if (!entry) {
          throw BadInput(fmt::format("no projection '{}' to rebuild (this application has: {})", args->first,
                                     known_names(*shared)));
        }
        return shared->with_stores([&](EventStore& events, ProjectionStore& models) {
          entry->rebuild(events, models, ProgressDisplay::automatic);
          auto head = events.head_position().value();
          out << fmt::format("rebuilt projection {} v{} through position {}\n", entry->name, entry->version, head);
          out.flush();
          return kOk;
        });
      });
    };
  });

  auto* retry = projection->add_subcommand("retry", "Put a failed projection (or one of its partitions) back to work");
  retry->add_option("name", args->first, "The projection")->required();
  retry->add_option("partition", args->second, "The partition (none for a projection that is not partitioned)");
  retry->callback([&action, shared, args, &out, &err] {
    action = [shared, args, &out, &err] {
      return guarded(err, [&] {
        return shared->with_stores([&](EventStore&, ProjectionStore& models) {
          auto key = key_of(*shared, models, args->first, args->second);
          retry_partition(models, key);
          out << fmt::format("projection {} v{} partition '{}' goes back to work\n", key.name, key.version,
                             key.partition);
          out.flush();
          return kOk;
        });
      });
    };
  });

  auto* skip = projection->add_subcommand("skip", "Move a failed partition past the event it failed on");
  skip->add_option("name", args->first, "The projection")->required();
  skip->add_option("partition", args->second, "The partition")->required();
  skip->callback([&action, shared, args, &out, &err] {
    action = [shared, args, &out, &err] {
      return guarded(err, [&] {
        return shared->with_stores([&](EventStore&, ProjectionStore& models) {
          auto key = key_of(*shared, models, args->first, args->second);
          auto e = skip_partition_event(models, key);
          out << fmt::format(
              "projection {} v{} partition '{}' skipped position {} (event {}, stream '{}', type '{}'): {}\n", key.name,
              key.version, key.partition, e.position.value(), e.event_id, e.stream, e.event_type, e.message);
          out.flush();
          return kOk;
        });
      });
    };
  });
  return {list, rebuild, retry, skip};
}

}  // namespace sourced
