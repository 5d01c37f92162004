#pragma once
// The projection commands, for an application to mount in its own CLI11 command line: projection code
// lives in the application, so only the application can rebuild its projections.
//
//   projections                          every projection of the read-model database, one JSON line each
//                                        (name, version, partition, checkpoint, head, lag, status, errors)
//   projection rebuild NAME              clear NAME's model and replay the log (progress bar on a terminal)
//   projection retry NAME [PARTITION]    a failed projection or partition goes back to work
//   projection skip NAME PARTITION       a failed partition moves past the event it failed on
//
//   sourced::ProjectionCli commands;
//   commands.with_stores = [&](auto& run) { Stores s = open(options); return run(s.events, s.models); };
//   commands.projections.push_back(sourced::projection_command_entry<sourced::SqliteProjectionStore>(balances));
//   for (CLI::App* sub : sourced::add_projection_commands(app, commands, action)) add_my_options(*sub);
//   app.parse(argc, argv);
//   return action ? action() : 0;
//
// Exit codes of the actions: 0 done; 1 a store or system failure (or a rebuild that failed); 2 bad input
// (an unknown projection, a partition that does not exist or has not failed). Messages go to `err`.
// Thread-safety: the command line is parsed and the action run by one thread.

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "sourced/projection.hpp"
#include "sourced/projection_partitions.hpp"
#include "sourced/store.hpp"

namespace sourced {

// One projection of the application, as the commands know it. A value type.
struct ProjectionCommandEntry {
  std::string name;
  std::uint32_t version = 1;
  std::uint32_t partitions = 0;  // 0: a whole projection (ProjectionRunner); else a PartitionedProjectionRunner's
  // Rebuilds it up to the head with `models` (the store `with_stores` gave), showing progress as asked;
  // returns once done, throws when the rebuild fails.
  std::function<void(EventStore& events, ProjectionStore& models, ProgressDisplay progress)> rebuild;
};

// An entry for `projection` on read-model stores of type `Store` (the ProjectionStore the commands are
// given must be one), partitioned when `partitions` > 0.
template <class Store>
ProjectionCommandEntry projection_command_entry(Projection<typename Store::Transaction> projection,
                                                std::uint32_t partitions = 0) {
  ProjectionCommandEntry e{projection.name, projection.version, partitions, {}};
  e.rebuild = [projection = std::move(projection), partitions](EventStore& events, ProjectionStore& models,
                                                               ProgressDisplay progress) {
    auto& store = dynamic_cast<Store&>(models);
    std::exception_ptr failed;
    if (partitions > 0) {
      PartitionedRunnerOptions o{.partitions = partitions, .start = StartMode::rebuild, .stop_when_caught_up = true};
      o.progress = progress;
      PartitionedProjectionRunner runner(events, store, projection, o);
      runner.wait_until_stopped(std::chrono::hours(24 * 365));
      failed = runner.error();
      for (const auto& p : runner.progress().partitions) {
        if (!failed && p.status == ProjectionStatus::failed) {
          throw StorageError("projection '" + projection.name + "' partition " + std::to_string(p.partition) +
                             " failed during the rebuild: " + p.last_error);
        }
      }
    } else {
      ProjectionRunnerOptions o{.start = StartMode::rebuild, .stop_when_caught_up = true};
      o.progress = progress;
      o.on_error = OnError::stop;
      ProjectionRunner runner(events, store, projection, o);
      runner.wait_until_stopped(std::chrono::hours(24 * 365));
      failed = runner.error();
    }
    if (failed) std::rethrow_exception(failed);
  };
  return e;
}

// What the commands need from the application. A value type; the functions are called on the thread
// that runs the action.
struct ProjectionCli {
  // Opens the event store and the read-model store (from the application's parsed options), calls `run`
  // with them, closes them, and returns what `run` returned.
  std::function<int(const std::function<int(EventStore& events, ProjectionStore& models)>& run)> with_stores;
  std::vector<ProjectionCommandEntry> projections;
  std::ostream* out = nullptr;  // std::cout when null
  std::ostream* err = nullptr;  // std::cerr when null
};

// Adds `projections` and `projection rebuild|retry|skip` to `app`. When one of them is chosen, parsing
// sets `action` to what runs it (returns the exit code). Returns the subcommands added, so the
// application can give them its own options (--store ...). `cli` is copied; `action` must outlive `app`.
std::vector<CLI::App*> add_projection_commands(CLI::App& app, ProjectionCli cli, std::function<int()>& action);

// Writes one JSON line per state row of `models` (every projection recorded there) with its lag against
// `events`: what `projections` prints, and the standalone `sourced projections`.
void list_projections(EventStore& events, ProjectionStore& models, std::ostream& out);

}  // namespace sourced
