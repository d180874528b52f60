#pragma once
// Tenants and their API keys. Keys are held only as SHA-256 hashes; a presented key is hashed
// and looked up, and is not kept. Immutable after construction; safe to share across threads.

#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/limits.h"
#include "core/types.h"
#include "fleet/config.h"

namespace powerplane::gateway {

struct Tenant {
  std::string id;
  std::vector<std::string> jurisdictions;  // empty = any.
  core::PriorityClass priority = core::PriorityClass::kInteractive;
  double ttft_target_s = 1.0;
  double tpot_target_s = 0.05;
  std::int64_t rpm = 0;  // requests per minute; 0 = unlimited.
  std::int64_t tpm = 0;  // tokens (prompt + completion) per minute; 0 = unlimited.
  double budget_usd = 0;  // per period; 0 = none.
  core::BudgetPeriod budget_period = core::BudgetPeriod::kNone;
  std::int64_t version = 0;  // the store's version when this was read (0: the fleet file).
};

// Who called: the tenant and the id of the key used.
struct Identity {
  std::shared_ptr<const Tenant> tenant;
  std::string key_id;
  explicit operator bool() const { return tenant != nullptr; }
};

class TenantDirectory {
 public:
  // Registers `tenant` under each hex SHA-256 key hash (key ids "cfg_<tenant>_<n>"). A hash that
  // is not 64 hex digits could match no key and is left out.
  void Add(Tenant tenant, const std::vector<std::string>& key_sha256);
  // Registers one key of an already registered tenant (left out as Add does).
  void AddKey(std::shared_ptr<const Tenant> tenant, std::string_view key_sha256, std::string key_id);
  // The tenant whose key this is, or an empty identity.
  Identity Authenticate(std::string_view api_key) const;
  // By tenant id, or null.
  std::shared_ptr<const Tenant> Find(std::string_view tenant_id) const;
  // Every tenant with a key, in no particular order.
  std::vector<std::shared_ptr<const Tenant>> Tenants() const;
  std::size_t size() const { return by_hash_.size(); }

 private:
  struct Entry {
    std::shared_ptr<const Tenant> tenant;
    std::string key_id;
  };
  // A digest's first 8 bytes are as good a hash as any.
  struct DigestHash {
    std::size_t operator()(const fleet::Sha256Digest& d) const {
      std::size_t h;
      std::memcpy(&h, d.data(), sizeof h);
      return h;
    }
  };
  std::unordered_map<fleet::Sha256Digest, Entry, DigestHash> by_hash_;
  std::unordered_map<std::string, std::shared_ptr<const Tenant>> by_id_;
};

// The key from "Authorization: Bearer <key>", or empty.
std::string_view BearerToken(std::string_view authorization);

}  // namespace powerplane::gateway
