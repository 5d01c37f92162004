#include "sourced/typed_events.hpp"

#include <fmt/format.h>

namespace sourced {

UnknownEventType::UnknownEventType(std::string stream, StreamVersion version, std::string type)
    : SerializationError(fmt::format("event {} of stream '{}' has type '{}', which is not a registered event type",
                                     version.value(), stream, type)),
      stream_(std::move(stream)),
      version_(version),
      type_(std::move(type)) {}

namespace detail {
namespace {

constexpr std::string_view kSchemaKey = "schema_version";
// Upcasting steps one event may take: more means a cycle among the registered upcasters.
constexpr int kMaxUpcastSteps = 64;

// The schema version recorded in an event's metadata; 1 when it records none. The substring test keeps
// the common case (no version recorded) from parsing JSON at all.
int schema_version_of(const RecordedEvent& event) {
  if (event.metadata.find(kSchemaKey) == std::string::npos) return 1;
  try {
    auto meta = nlohmann::json::parse(event.metadata);
    if (meta.is_object()) {
      auto it = meta.find(kSchemaKey);
      if (it != meta.end() && it->is_number_integer()) return it->get<int>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw event_error(event, event.type, std::string("cannot read the metadata as JSON: ") + e.what());
  }
  return 1;
}

}  // namespace

SerializationError event_error(const RecordedEvent& event, std::string_view type, const std::string& what) {
  return SerializationError(
      fmt::format("event {} of stream '{}' (type {}): {}", event.version.value(), event.stream, type, what));
}

EventTypeTable::EventTypeTable(std::vector<std::string> names)
    : names_(std::move(names)), schema_versions_(names_.size(), 1), metadata_(names_.size()) {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (auto problem = event_type_problem(names_[i])) {
      throw InvalidArgument(fmt::format("event type name {}: {}", i + 1, *problem));
    }
    if (!index_.emplace(names_[i], i).second) {
      throw InvalidArgument(fmt::format("event type name '{}' is registered twice", names_[i]));
    }
  }
}

std::size_t EventTypeTable::index_of(std::string_view type) const {
  auto it = index_.find(std::string(type));
  return it == index_.end() ? npos : it->second;
}

void EventTypeTable::set_schema_version(std::size_t index, int version) {
  if (version < 1)
    throw InvalidArgument(fmt::format("schema version {} of '{}': must be 1 or more", version, names_[index]));
  schema_versions_[index] = version;
  metadata_[index] = version == 1 ? std::string() : nlohmann::json{{kSchemaKey, version}}.dump();
}

void EventTypeTable::add_upcaster(std::string type, int from_version, Upcaster step) {
  if (!step) throw InvalidArgument("an upcaster needs a function");
  has_upcasters_[type] = true;
  if (!upcasters_.emplace(std::pair(std::move(type), from_version), std::move(step)).second) {
    throw InvalidArgument("two upcasters for the same type and schema version");
  }
}

EventTypeTable::Resolved EventTypeTable::resolve(const RecordedEvent& event) const {
  std::size_t index = index_of(event.type);
  bool upcastable = has_upcasters_.contains(event.type);
  // The common case: a registered type, without upcasters, stored at its current version.
  if (!upcastable && (index == npos || schema_versions_[index] == 1)) return {index, event.type, std::nullopt};
  StoredShape shape{event.type, schema_version_of(event), std::string()};
  bool data_loaded = false;
  for (int step = 0;; ++step) {
    auto it = upcasters_.find(std::pair(shape.type, shape.schema_version));
    if (it == upcasters_.end()) break;
    if (step == kMaxUpcastSteps) {
      throw event_error(event, event.type,
                        fmt::format("more than {} upcasting steps: the upcasters form a cycle", kMaxUpcastSteps));
    }
    if (!data_loaded) {
      shape.data = event.data;
      data_loaded = true;
    }
    try {
      shape = it->second(std::move(shape));
    } catch (const SerializationError& e) {
      throw event_error(event, event.type,
                        fmt::format("upcasting from schema version {}: {}", it->first.second, e.what()));
    } catch (const nlohmann::json::exception& e) {
      throw event_error(event, event.type,
                        fmt::format("upcasting from schema version {}: {}", it->first.second, e.what()));
    }
  }
  index = index_of(shape.type);
  if (index == npos) return {npos, shape.type, std::nullopt};
  if (shape.schema_version != schema_versions_[index]) {
    throw event_error(event, event.type,
                      fmt::format("stored as '{}' schema version {}, but the current version is {} and no upcaster "
                                  "leads there",
                                  shape.type, shape.schema_version, schema_versions_[index]));
  }
  if (!data_loaded) return {index, shape.type, std::nullopt};
  return {index, shape.type, std::move(shape.data)};
}

}  // namespace detail
}  // namespace sourced
