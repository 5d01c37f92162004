#pragma once
// LocalLeases: one-consumer leases that live in this process only (the memory engine's, and SQLite's for
// a store without a file). A lease is a guard: destroying it lets the next consumer in. Safe for
// concurrent use; a lease may outlive the table that made it.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "sourced/subscription_registry.hpp"

namespace sourced::detail {

class LocalLeases {
 public:
  // The lease on `key` (of subscription `subscription_id`), or nullptr when someone holds it.
  std::unique_ptr<SubscriptionLease> try_take(const std::string& key, std::string holder,
                                              std::uint64_t subscription_id) {
    std::lock_guard lock(shared_->mu);
    if (!shared_->held.emplace(key, std::move(holder)).second) return nullptr;
    return std::make_unique<Lease>(shared_, key, subscription_id);
  }
  std::optional<std::string> holder(const std::string& key) const {
    std::lock_guard lock(shared_->mu);
    auto it = shared_->held.find(key);
    if (it == shared_->held.end()) return std::nullopt;
    return it->second;
  }

 private:
  struct Shared {
    mutable std::mutex mu;
    std::map<std::string, std::string> held;  // key -> holder
  };
  class Lease final : public SubscriptionLease {
   public:
    Lease(std::shared_ptr<Shared> shared, std::string key, std::uint64_t subscription_id)
        : SubscriptionLease(subscription_id), shared_(std::move(shared)), key_(std::move(key)) {}
    ~Lease() override {
      std::lock_guard lock(shared_->mu);
      shared_->held.erase(key_);
    }

   private:
    std::shared_ptr<Shared> shared_;
    std::string key_;
  };
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

}  // namespace sourced::detail
