// Opening stores for the CLI's commands, and keeping secrets out of its messages.

#include <algorithm>
#include <cctype>
#include <iostream>

#include <fmt/format.h>

#include "commands.hpp"
#include "sourced/open_store.hpp"
#include "sourced/sqlite_store.hpp"

namespace sourced::cli {
namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), s.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         });
}

bool is_postgres(std::string_view location) {
  return starts_with_nocase(location, "postgres://") || starts_with_nocase(location, "postgresql://");
}

void replace_all(std::string& text, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size())) {
    text.replace(at, what.size(), with);
  }
}

}  // namespace

std::unique_ptr<EventStore> open_for_writing(const std::string& location, std::string_view command) {
  if (location == "memory:") {
    throw UsageError(fmt::format(
        "--store memory: holds events only while one command runs, so what `{}` writes would be gone when it "
        "exits; give a SQLite file or a postgres:// URL",
        command));
  }
  return open_store(location);
}

std::unique_ptr<EventStore> open_for_reading(const std::string& location) {
  try {
    // A SQLite file is opened with a small page cache: see SqliteOptions::read_cache_kib (a 100,000-event
    // `read '$all'` took 72 ms with 256 KiB against 82 ms with SQLite's 2,000 KiB, all of it first touches
    // of the cache's memory; 128 KiB was no faster).
    if (auto file = sqlite_file_of(location); file && !file->empty()) {
      return open_sqlite_store(*file, {.create_if_missing = false, .read_only = true, .read_cache_kib = 256});
    }
    return open_store(location, {.create_if_missing = false, .read_only = true});
  } catch (const StoreNotFound&) {
    return nullptr;
  }
}

std::string engine_of(const std::string& location) {
  if (location == "memory:") return "memory";
  return is_postgres(location) ? "postgres" : "sqlite";
}

std::optional<std::string> sqlite_file_of(const std::string& location) {
  if (location == "memory:" || is_postgres(location)) return std::nullopt;
  return starts_with_nocase(location, "sqlite:") ? location.substr(7) : location;
}

std::string redact(std::string message, const std::string& location) {
  auto scheme = location.find("://");
  if (scheme == std::string::npos) return message;
  // The password of user:password@host (up to the last '@' of the authority, as libpq reads it) and of a
  // password= parameter.
  std::vector<std::string> secrets;
  auto authority_end = location.find_first_of("/?", scheme + 3);
  std::string_view authority(location.data() + scheme + 3,
                             (authority_end == std::string::npos ? location.size() : authority_end) - scheme - 3);
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    auto userinfo = authority.substr(0, at);
    if (auto colon = userinfo.find(':'); colon != std::string_view::npos) {
      secrets.emplace_back(userinfo.substr(colon + 1));
    }
  } else if (auto at_anywhere = location.rfind('@'); at_anywhere != std::string::npos) {
    // A malformed URL ("u:p/w@host"): everything up to its last '@' may be a secret.
    secrets.push_back(location.substr(scheme + 3, at_anywhere - scheme - 3));
  }
  for (auto p = location.find("password="); p != std::string::npos; p = location.find("password=", p + 1)) {
    auto end = location.find('&', p);
    secrets.push_back(location.substr(p + 9, end == std::string::npos ? std::string::npos : end - p - 9));
  }
  std::string redacted = location;
  for (const auto& s : secrets) replace_all(redacted, s, "***");
  replace_all(message, location, redacted);
  // Parts of the URL quoted on their own (libpq quotes the token it could not read).
  for (const auto& s : secrets) {
    if (!s.empty()) replace_all(message, "\"" + s + "\"", "\"***\"");
    if (s.size() >= 4) replace_all(message, s, "***");
  }
  return message;
}

Output::Output(std::ostream& out) : out_(out) { buffer_.reserve(kFlushBytes + 64 * 1024); }

void Output::write() {
  if (!buffer_.empty()) {
    out_.write(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    buffer_.clear();
  }
  if (!out_) throw OutputError();
}

void Output::flush() {
  write();
  out_.flush();
  if (!out_) throw OutputError();
}

}  // namespace sourced::cli
