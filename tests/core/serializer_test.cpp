#include "sourced/serializer.hpp"

#include <gtest/gtest.h>

#include "sourced/memory_store.hpp"

namespace sourced {
namespace {

struct Deposited {
  std::string account;
  long amount = 0;
  friend bool operator==(const Deposited&, const Deposited&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Deposited, account, amount)

// A serializer of another format: "account:amount" as plain text.
struct ColonSerializer {
  template <class T>
  static std::string serialize(const T& d) {
    return d.account + ":" + std::to_string(d.amount);
  }
  template <class T>
  static T deserialize(std::string_view bytes) {
    auto colon = bytes.find(':');
    if (colon == std::string_view::npos) throw SerializationError("no colon");
    return Deposited{std::string(bytes.substr(0, colon)), std::stol(std::string(bytes.substr(colon + 1)))};
  }
};

TEST(Serializer, TypedEventsRoundTripThroughTheStoreAsJson) {
  auto store = open_memory_store();
  store->append("account-1", ExpectedVersion::any(), {to_event_data("Deposited", Deposited{"account-1", 42})});
  auto events = store->read_stream("account-1").to_vector();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, R"({"account":"account-1","amount":42})");
  EXPECT_EQ(event_data_as<Deposited>(events[0]), (Deposited{"account-1", 42}));
}

TEST(Serializer, UnreadableDataNamesTheEvent) {
  RecordedEvent e;
  e.stream = "account-1";
  e.version = StreamVersion(3);
  e.type = "Deposited";
  e.data = R"({"account":"x"})";  // amount missing
  try {
    event_data_as<Deposited>(e);
    FAIL();
  } catch (const SerializationError& err) {
    EXPECT_EQ(err.code(), ErrorCode::serialization);
    EXPECT_NE(std::string(err.what()).find("event 3 of stream 'account-1'"), std::string::npos) << err.what();
  }
}

TEST(Serializer, AnotherFormatPlugsIn) {
  static_assert(SerializerFor<ColonSerializer, Deposited>);
  static_assert(SerializerFor<JsonSerializer, Deposited>);
  auto data = to_event_data<Deposited, ColonSerializer>("Deposited", Deposited{"a", 7});
  EXPECT_EQ(data.data, "a:7");
  RecordedEvent e;
  e.data = data.data;
  EXPECT_EQ((event_data_as<Deposited, ColonSerializer>(e)), (Deposited{"a", 7}));
}

}  // namespace
}  // namespace sourced
