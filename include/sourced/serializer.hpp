#pragma once
// Serializers turn typed values into the bytes an event carries (data, metadata) and back. The store
// itself deals only in bytes and type names; this header is the typed layer on top.
//
// A serializer is any type S with
//   template <class T> static std::string serialize(const T&);
//   template <class T> static T deserialize(std::string_view bytes);   // throws SerializationError
// A serializer may also declare `static constexpr ContentType content_type` (JsonSerializer: json), which
// to_event_data() records on the event; without it the event's content type is unknown.
// JsonSerializer, the default, uses nlohmann-json's to_json/from_json for T (write them next to your
// event types, or use NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE). Plug in another format (protobuf, msgpack …)
// by passing your own S.
//
//   struct Deposited { long amount; };
//   NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Deposited, amount)
//   store->append("account-1", ExpectedVersion::any(), {to_event_data("Deposited", Deposited{10})});
//   for (const auto& e : store->read_stream("account-1")) auto d = event_data_as<Deposited>(e);
//
// Stateless and thread-safe.

#include <concepts>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sourced/error.hpp"
#include "sourced/event.hpp"

namespace sourced {

// The stored bytes could not be turned into the requested type (malformed JSON, a missing field).
class SerializationError : public Error {
 public:
  explicit SerializationError(const std::string& message) : Error(ErrorCode::serialization, message) {}
};

struct JsonSerializer {
  static constexpr ContentType content_type = ContentType::json;
  template <class T>
  static std::string serialize(const T& value) {
    return nlohmann::json(value).dump();
  }
  template <class T>
  static T deserialize(std::string_view bytes) {
    try {
      return nlohmann::json::parse(bytes).get<T>();
    } catch (const nlohmann::json::exception& e) {
      throw SerializationError(std::string("cannot read JSON: ") + e.what());
    }
  }
};

template <class S, class T>
concept SerializerFor = requires(const T& value, std::string_view bytes) {
  { S::serialize(value) } -> std::convertible_to<std::string>;
  { S::template deserialize<T>(bytes) } -> std::same_as<T>;
};

// An event to append whose data is `data` serialized with S.
template <class T, class S = JsonSerializer>
requires SerializerFor<S, T> EventData to_event_data(std::string type, const T& data) {
  EventData e;
  e.type = std::move(type);
  e.data = S::serialize(data);
  if constexpr (requires { S::content_type; }) e.content_type = S::content_type;
  return e;
}

// The event's data as a T. Throws SerializationError naming the event when it cannot be read.
template <class T, class S = JsonSerializer>
requires SerializerFor<S, T> T event_data_as(const RecordedEvent& event) {
  try {
    return S::template deserialize<T>(event.data);
  } catch (const SerializationError& e) {
    throw SerializationError("event " + std::to_string(event.version.value()) + " of stream '" + event.stream +
                             "' (type " + event.type + "): " + e.what());
  }
}

}  // namespace sourced
