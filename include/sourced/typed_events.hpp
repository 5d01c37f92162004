#pragma once
// sourced::EventRegistry: the C++ types of a domain's events, each under a type name, encoded to the bytes
// a stored event carries and decoded back into a std::variant of the registered types. Upcasters turn the
// shape an event was stored in long ago (its type name and schema version) into the current one on read,
// so old events never need rewriting.
//
//   struct Opened { std::string owner; };           // with to_json/from_json (JsonSerializer, the default)
//   struct Deposited { long amount = 0; };
//   EventRegistry<Opened, Deposited> events({"Opened", "Deposited"});
//   store.append("account-1", ExpectedVersion::any(), {events.encode(Deposited{10})});
//   for (const auto& e : store.read_stream("account-1")) std::visit(..., events.decode(e));
//
// The schema version of an event type is 1 unless set with schema_version<E>(n) (or E::kSchemaVersion);
// an event of version n > 1 is stored with {"schema_version": n} in its metadata, and an event without
// it is read as version 1. upcast(type, version, f) registers the step from that stored shape to the next
// one (f may rename the type); decode() applies steps until the shape is current.
//
// Thread-safety: configure (schema_version, upcast) before sharing; after that every const member is
// safe to call from many threads at once. The registry must outlive what uses it (repositories).

#include <array>
#include <concepts>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "sourced/error.hpp"
#include "sourced/event.hpp"
#include "sourced/serializer.hpp"

namespace sourced {

// An event as stored, before it is decoded: what upcasters read and return.
struct StoredShape {
  std::string type;
  int schema_version = 1;
  std::string data;
};

// One step from an old stored shape to a newer one.
using Upcaster = std::function<StoredShape(StoredShape)>;

// What decoding does with an event whose type name is not registered.
enum class UnknownEventTypes {
  fail,  // throw UnknownEventType
  skip,  // leave the event out (a reader that only cares about some types)
};

// A stored event's type name is not registered (and no upcaster turned it into one that is).
class UnknownEventType : public SerializationError {
 public:
  UnknownEventType(std::string stream, StreamVersion version, std::string type);
  const std::string& stream() const { return stream_; }
  StreamVersion version() const { return version_; }
  const std::string& type() const { return type_; }

 private:
  std::string stream_;
  StreamVersion version_;
  std::string type_;
};

namespace detail {
// The part of a registry that does not depend on the event types: names, schema versions and upcasters.
class EventTypeTable {
 public:
  explicit EventTypeTable(std::vector<std::string> names);
  std::size_t index_of(std::string_view type) const;  // npos when not registered
  const std::string& name(std::size_t index) const { return names_[index]; }
  int schema_version(std::size_t index) const { return schema_versions_[index]; }
  void set_schema_version(std::size_t index, int version);
  void add_upcaster(std::string type, int from_version, Upcaster step);
  // The metadata an event of this type is stored with: its schema version when above 1.
  const std::string& metadata(std::size_t index) const { return metadata_[index]; }
  // The event's current shape: its type index (npos when unknown) and, after upcasting, its data. `data`
  // is empty when no upcaster ran (the stored bytes are current).
  struct Resolved {
    std::size_t index;
    std::string type;  // set when unknown
    std::optional<std::string> data;
  };
  Resolved resolve(const RecordedEvent& event) const;

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

 private:
  std::vector<std::string> names_;
  std::vector<int> schema_versions_;
  std::vector<std::string> metadata_;
  std::unordered_map<std::string, std::size_t> index_;
  std::map<std::pair<std::string, int>, Upcaster, std::less<>> upcasters_;
  std::unordered_map<std::string, bool> has_upcasters_;
};

SerializationError event_error(const RecordedEvent& event, std::string_view type, const std::string& what);
}  // namespace detail

template <class S, class... Events>
class BasicEventRegistry {
  static_assert(sizeof...(Events) > 0, "register at least one event type");
  static_assert((SerializerFor<S, Events> && ...), "every event type needs the serializer (to_json/from_json)");

 public:
  // A value of any registered event type.
  using Event = std::variant<Events...>;
  using Serializer = S;

  // `names[i]` is the type name of the i-th event type. Throws InvalidArgument for an invalid or repeated
  // name.
  explicit BasicEventRegistry(std::array<std::string, sizeof...(Events)> names)
      : table_(std::vector<std::string>(names.begin(), names.end())) {
    init_schema_versions(std::index_sequence_for<Events...>{});
  }
  // Each type names itself: `static constexpr std::string_view kEventType = "Deposited";`.
  BasicEventRegistry() requires(requires { Events::kEventType; } && ...)
      : BasicEventRegistry(std::array<std::string, sizeof...(Events)>{std::string(Events::kEventType)...}) {}

  template <class E>
  static constexpr std::size_t index_of() {
    static_assert((std::same_as<E, Events> || ...), "not a registered event type");
    constexpr std::array<bool, sizeof...(Events)> same = {std::same_as<E, Events>...};
    for (std::size_t i = 0; i < same.size(); ++i) {
      if (same[i]) return i;
    }
    return same.size();
  }
  template <class E>
  const std::string& type_name() const {
    return table_.name(index_of<E>());
  }
  const std::string& type_name(const Event& event) const { return table_.name(event.index()); }

  // The current schema version of E: events are written with it, and older ones upcast to it on read.
  template <class E>
  BasicEventRegistry& schema_version(int version) {
    table_.set_schema_version(index_of<E>(), version);
    return *this;
  }
  template <class E>
  int schema_version() const {
    return table_.schema_version(index_of<E>());
  }

  // Registers the step from events stored as (`type`, `from_version`) to the shape `step` returns.
  BasicEventRegistry& upcast(std::string type, int from_version, Upcaster step) {
    table_.add_upcaster(std::move(type), from_version, std::move(step));
    return *this;
  }
  // The common step for JSON data: same type, version + 1, the data rewritten by `step`.
  BasicEventRegistry& upcast_json(std::string type, int from_version,
                                  std::function<nlohmann::json(nlohmann::json)> step) {
    return upcast(type, from_version, [step = std::move(step)](StoredShape shape) {
      nlohmann::json data;
      try {
        data = nlohmann::json::parse(shape.data);
      } catch (const nlohmann::json::exception& e) {
        throw SerializationError(std::string("cannot read JSON: ") + e.what());
      }
      return StoredShape{std::move(shape.type), shape.schema_version + 1, step(std::move(data)).dump()};
    });
  }

  // The event to append (no id: the store, a repository or the caller sets it).
  template <class E>
  requires(std::same_as<E, Events> || ...) EventData encode(const E& event)
  const {
    constexpr std::size_t i = index_of<E>();
    EventData out;
    out.type = table_.name(i);
    out.data = S::serialize(event);
    out.metadata = table_.metadata(i);
    if constexpr (requires { S::content_type; }) out.content_type = S::content_type;
    return out;
  }
  EventData encode(const Event& event) const {
    return std::visit([this](const auto& e) { return encode(e); }, event);
  }

  // The event as its current type. Throws UnknownEventType for an unregistered type name, and
  // SerializationError naming the event when its data does not fit its type.
  Event decode(const RecordedEvent& event) const { return *decode(event, UnknownEventTypes::fail); }
  // nullopt for an unregistered type name when `unknown` is skip.
  std::optional<Event> decode(const RecordedEvent& event, UnknownEventTypes unknown) const {
    auto resolved = table_.resolve(event);
    if (resolved.index == detail::EventTypeTable::npos) {
      if (unknown == UnknownEventTypes::skip) return std::nullopt;
      throw UnknownEventType(event.stream, event.version, resolved.type);
    }
    std::string_view bytes = resolved.data ? std::string_view(*resolved.data) : std::string_view(event.data);
    try {
      return kDecoders[resolved.index](bytes);
    } catch (const SerializationError& e) {
      throw detail::event_error(event, table_.name(resolved.index), e.what());
    }
  }

 private:
  template <std::size_t... I>
  void init_schema_versions(std::index_sequence<I...>) {
    (
        [&] {
          if constexpr (requires { Events::kSchemaVersion; }) table_.set_schema_version(I, Events::kSchemaVersion);
        }(),
        ...);
  }

  static constexpr std::array<Event (*)(std::string_view), sizeof...(Events)> kDecoders = {+[](std::string_view bytes) {
    return Event(std::in_place_type<Events>, S::template deserialize<Events>(bytes));
  }...};

  detail::EventTypeTable table_;
};

// The registry with the JSON serializer (nlohmann-json's to_json/from_json for each type).
template <class... Events>
using EventRegistry = BasicEventRegistry<JsonSerializer, Events...>;

}  // namespace sourced
