// An event handler process for the SIGKILL test: runs the handler NAME over the store at LOCATION (any
// engine, see open_store) whose side effect is "sending" each event once, deduplicated by its idempotency
// key, until killed or (with UNTIL) until it has handled every event through position UNTIL.
//
//   event_handler_worker LOCATION NAME DIR [UNTIL]
//
// DIR/handled gets one line "KEY" per handler call, before the side effect (evidence of at least once);
// DIR/sent gets "KEY" once per key: the side effect, skipped when the key is there already. Each line is
// one write(2) with O_APPEND, so a SIGKILL leaves whole lines. The checkpoint is saved every 5 events, so a
// kill makes the next worker handle some events again.

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

#include "sourced/event_handler.hpp"
#include "sourced/open_store.hpp"

namespace {

void append_line(const std::string& path, const std::string& line) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  std::string text = line + "\n";
  ssize_t n = ::write(fd, text.data(), text.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) throw std::runtime_error("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: event_handler_worker LOCATION NAME DIR [UNTIL]\n";
    return 2;
  }
  try {
    const std::string dir = argv[3];
    std::set<std::string> sent;
    {
      std::ifstream in(dir + "/sent");
      for (std::string line; std::getline(in, line);) sent.insert(line);
    }
    auto store = sourced::open_store(argv[1]);
    sourced::EventHandler handler{
        .name = argv[2],
        .filter = sourced::EventFilter{.category = "order"},
        .handle =
            [&](const sourced::HandledEvent& h) {
              append_line(dir + "/handled", h.idempotency_key);
              std::this_thread::sleep_for(std::chrono::microseconds(300));  // a side effect takes a while
              if (sent.insert(h.idempotency_key).second) append_line(dir + "/sent", h.idempotency_key);
            },
    };
    sourced::EventHandlerRunner runner(*store, handler,
                                       {.wait_for_lease = true,
                                        .lease_timeout = std::chrono::minutes(2),
                                        .checkpoint_after_acks = 5,
                                        .checkpoint_after = std::chrono::milliseconds(50)});
    std::printf("running\n");
    std::fflush(stdout);
    if (argc == 5) {
      sourced::Position until(std::stoull(argv[4]));
      while (!runner.wait_for(until, std::chrono::seconds(1))) {
        if (!runner.running()) break;
      }
      runner.stop();
      if (auto e = runner.error()) std::rethrow_exception(e);
      return 0;
    }
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  } catch (const std::exception& e) {
    std::cerr << "event_handler_worker: " << e.what() << "\n";
    return 1;
  }
}
