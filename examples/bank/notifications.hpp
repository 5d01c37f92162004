#pragma once
// The bank's notifications: an event handler (sourced/event_handler.hpp) named "bank-mailer" that sends
// the account holder an "e-mail" for each account event, by appending it to a mail file (one message per
// event, blank-line separated). It is a side effect outside the store, so it is delivered at least once;
// each message carries the event's idempotency key as its Message-Id, and the mailer does not send a key
// it finds in the file already, so a redelivery (after a crash, a retry) sends nothing twice.
//
// Not thread-safe: the handler runs on its runner's thread only.

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include "domain.hpp"
#include "sourced/event_handler.hpp"
#include "sourced/store.hpp"

namespace bank {

inline constexpr std::string_view kMailerName = "bank-mailer";

class Mailbox {
 public:
  explicit Mailbox(std::string path) : path_(std::move(path)) {}

  // Sends (appends) `message` once per key; false when it was sent before.
  bool send_once(const std::string& key, const std::string& to, const std::string& subject, const std::string& body) {
    // What was sent is read when the first mail goes out, not before: by then this process holds the
    // mailer's lease, so no other one is writing.
    if (!loaded_) load();
    if (sent_.count(key)) return false;
    std::string text = fmt::format("Message-Id: <{}>\nTo: {}\nSubject: {}\n\n{}\n\n", key, to, subject, body);
    // One write with O_APPEND: a message is in the file whole or not at all, as far as another reader or a
    // crash of this process can tell.
    int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot open {}: {}", path_, std::strerror(errno)));
    ssize_t n = ::write(fd, text.data(), text.size());
    int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size())) {
      throw std::runtime_error(
          fmt::format("cannot write to {}: {}", path_, n < 0 ? std::strerror(err) : "short write"));
    }
    sent_.insert(key);
    return true;
  }

  const std::string& path() const { return path_; }

 private:
  void load() {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("Message-Id: <") && line.ends_with(">")) sent_.insert(line.substr(13, line.size() - 14));
    }
    loaded_ = true;
  }

  std::string path_;
  bool loaded_ = false;
  std::set<std::string> sent_;
};

// The holder's name, from the account's first event (AccountOpened); the account id when it cannot be read.
inline std::string holder_of(sourced::EventStore& store, const std::string& stream, const std::string& account) {
  auto reader = store.read_stream(stream, {.max_count = 1});
  if (reader.state() == sourced::EventReader::State::ok) {
    if (const sourced::RecordedEvent* first = reader.try_next()) {
      if (auto e = account_events().decode(*first, sourced::UnknownEventTypes::skip)) {
        if (auto* opened = std::get_if<AccountOpened>(&*e)) return opened->owner;
      }
    }
  }
  return "the holder of account " + account;
}

// The mail for one account event, to the holder named when the account was opened (read from `store`, which
// must outlive the handler); `sent` is called with the recipient and subject of each message actually sent.
inline sourced::EventHandler mailer(std::shared_ptr<Mailbox> box, sourced::EventStore& store,
                                    std::function<void(const std::string& to, const std::string& subject)> sent = {}) {
  return sourced::EventHandler{
      .name = std::string(kMailerName),
      .filter = sourced::EventFilter{.category = "account"},
      .handle =
          [box, sent, &store](const sourced::HandledEvent& h) {
            auto event = account_events().decode(h.event, sourced::UnknownEventTypes::skip);
            if (!event) return;
            const std::string account = h.event.stream.substr(std::string_view("account-").size());
            const std::string to = holder_of(store, h.event.stream, account);
            std::string subject, body;
            std::visit(sourced::overloaded{
                           [&](const AccountOpened& o) {
                             subject = fmt::format("Welcome, {}", o.owner);
                             body = fmt::format("Your account {} is open.", account);
                           },
                           [&](const MoneyDeposited& d) {
                             subject = fmt::format("{} deposited", d.amount);
                             body = fmt::format("{} was deposited into account {}.", d.amount, account);
                           },
                           [&](const MoneyWithdrawn& w) {
                             subject = fmt::format("{} withdrawn", w.amount);
                             body = fmt::format("{} was withdrawn from account {}.", w.amount, account);
                           },
                           [&](const AccountClosed&) {
                             subject = "Account closed";
                             body = fmt::format("Your account {} is closed.", account);
                           },
                       },
                       *event);
            if (box->send_once(h.idempotency_key, to, subject, body) && sent) sent(to, subject);
          },
      // A mail file that cannot be written will not heal by itself soon: retry a few times, then park the
      // event (replay it with `sourced subscription replay-parked bank-mailer` once fixed).
      .on_failure = [](const std::exception&,
                       const sourced::HandledEvent&) { return sourced::FailureDecision::retry(3); },
  };
}

}  // namespace bank
