#include "sourced/typed_events.hpp"

#include <gtest/gtest.h>

#include "cqrs/bank_domain.hpp"
#include "sourced/memory_store.hpp"

namespace sourced {
namespace {

using namespace testing::bank;

EventData raw(std::string type, std::string data, std::string metadata = {}) {
  EventData e;
  e.type = std::move(type);
  e.data = std::move(data);
  e.metadata = std::move(metadata);
  return e;
}

TEST(TypedEvents, EncodeNamesTheTypeAndMarksJson) {
  EventData e = events().encode(Deposited{42});
  EXPECT_EQ(e.type, "MoneyDeposited");
  EXPECT_EQ(e.data, R"({"amount":42})");
  EXPECT_EQ(e.metadata, "");  // schema version 1 is not written
  EXPECT_EQ(e.content_type, ContentType::json);
  EXPECT_EQ(events().encode(Account::Event(Opened{"Ada"})).type, "AccountOpened");
  EXPECT_EQ(events().type_name<Withdrawn>(), "MoneyWithdrawn");
}

TEST(TypedEvents, DecodeReturnsTheRegisteredTypeThroughTheStore) {
  auto store = open_memory_store();
  store->append("account-1", ExpectedVersion::no_stream(),
                {events().encode(Opened{"Ada"}), events().encode(Deposited{5}), events().encode(Withdrawn{2})});
  std::vector<Account::Event> decoded;
  for (const auto& e : store->read_stream("account-1")) decoded.push_back(events().decode(e));
  EXPECT_EQ(decoded, (std::vector<Account::Event>{Opened{"Ada"}, Deposited{5}, Withdrawn{2}}));
}

TEST(TypedEvents, AnUnregisteredTypeNamesStreamVersionAndType) {
  auto store = open_memory_store();
  store->append("account-1", ExpectedVersion::no_stream(),
                {events().encode(Opened{"Ada"}), raw("AccountFrozen", "{}"), events().encode(Deposited{5})});
  auto stored = store->read_stream("account-1").to_vector();
  try {
    events().decode(stored[1]);
    FAIL() << "an unknown type decoded";
  } catch (const UnknownEventType& e) {
    EXPECT_EQ(e.stream(), "account-1");
    EXPECT_EQ(e.version(), StreamVersion(2));
    EXPECT_EQ(e.type(), "AccountFrozen");
    EXPECT_EQ(e.code(), ErrorCode::serialization);
    EXPECT_STREQ(e.what(),
                 "event 2 of stream 'account-1' has type 'AccountFrozen', which is not a registered event type");
  }
  // Skipped when the reader asks.
  std::vector<Account::Event> kept;
  for (const auto& e : stored) {
    if (auto d = events().decode(e, UnknownEventTypes::skip)) kept.push_back(*d);
  }
  EXPECT_EQ(kept, (std::vector<Account::Event>{Opened{"Ada"}, Deposited{5}}));
}

TEST(TypedEvents, DataThatDoesNotFitItsTypeNamesTheEvent) {
  RecordedEvent e;
  e.stream = "account-7";
  e.version = StreamVersion(3);
  e.type = "MoneyDeposited";
  e.data = R"({"amount":"many"})";
  try {
    events().decode(e);
    FAIL();
  } catch (const SerializationError& err) {
    EXPECT_NE(std::string(err.what()).find("event 3 of stream 'account-7' (type MoneyDeposited)"), std::string::npos)
        << err.what();
  }
}

TEST(TypedEvents, NamesMustBeValidAndDistinct) {
  EXPECT_THROW((EventRegistry<Opened, Deposited>({"Same", "Same"})), InvalidArgument);
  EXPECT_THROW((EventRegistry<Opened, Deposited>({"Opened", ""})), InvalidArgument);
}

struct Named {
  static constexpr std::string_view kEventType = "Named";
  static constexpr int kSchemaVersion = 2;
  int x = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Named, x)

TEST(TypedEvents, TypesMayNameAndVersionThemselves) {
  EventRegistry<Named> registry;
  EXPECT_EQ(registry.type_name<Named>(), "Named");
  EXPECT_EQ(registry.schema_version<Named>(), 2);
  EXPECT_EQ(registry.encode(Named{1}).metadata, R"({"schema_version":2})");
}

// Deposits were first stored as "FundsAdded" {"amt": n} (schema 1), then renamed to "MoneyDeposited"
// {"amount": n} (schema 2), then given a currency (schema 3, today's shape).
struct DepositedV3 {
  long amount = 0;
  std::string currency;
  friend bool operator==(const DepositedV3&, const DepositedV3&) = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(DepositedV3, amount, currency)

EventRegistry<Opened, DepositedV3> upcasting_registry() {
  EventRegistry<Opened, DepositedV3> r({"AccountOpened", "MoneyDeposited"});
  r.schema_version<DepositedV3>(3);
  r.upcast("FundsAdded", 1, [](StoredShape s) {
    auto data = nlohmann::json::parse(s.data);
    return StoredShape{"MoneyDeposited", 2, nlohmann::json{{"amount", data.at("amt")}}.dump()};
  });
  r.upcast_json("MoneyDeposited", 2, [](nlohmann::json d) {
    d["currency"] = "EUR";
    return d;
  });
  return r;
}

TEST(TypedEvents, UpcastersChainFromTheOldestShapeToTheCurrentOne) {
  auto registry = upcasting_registry();
  using Event = decltype(registry)::Event;
  auto store = open_memory_store();
  store->append("account-1", ExpectedVersion::no_stream(),
                {raw("FundsAdded", R"({"amt":5})"),                                    // schema 1: two steps
                 raw("MoneyDeposited", R"({"amount":6})", R"({"schema_version":2})"),  // one step
                 registry.encode(DepositedV3{7, "USD"})});                             // current
  auto stored = store->read_stream("account-1").to_vector();
  EXPECT_EQ(stored[2].metadata, R"({"schema_version":3})");
  std::vector<Event> decoded;
  for (const auto& e : stored) decoded.push_back(registry.decode(e));
  EXPECT_EQ(decoded, (std::vector<Event>{DepositedV3{5, "EUR"}, DepositedV3{6, "EUR"}, DepositedV3{7, "USD"}}));
}

TEST(TypedEvents, AnOldShapeWithoutAnUpcasterIsAnErrorNamingTheEvent) {
  auto registry = upcasting_registry();
  RecordedEvent e;
  e.stream = "account-1";
  e.version = StreamVersion(4);
  e.type = "MoneyDeposited";
  e.data = R"({"amount":1})";  // no schema version: 1, and nothing upcasts MoneyDeposited 1
  try {
    registry.decode(e);
    FAIL();
  } catch (const SerializationError& err) {
    EXPECT_NE(std::string(err.what()).find("event 4 of stream 'account-1'"), std::string::npos) << err.what();
    EXPECT_NE(std::string(err.what()).find("schema version 1"), std::string::npos) << err.what();
  }
}

TEST(TypedEvents, AnUpcasterThatFailsNamesTheEvent) {
  auto registry = upcasting_registry();
  RecordedEvent e;
  e.stream = "account-1";
  e.version = StreamVersion(2);
  e.type = "MoneyDeposited";
  e.data = "not json";
  e.metadata = R"({"schema_version":2})";
  EXPECT_THROW(registry.decode(e), SerializationError);
}

}  // namespace
}  // namespace sourced
