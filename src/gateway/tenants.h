#pragma once
// Tenants and their API keys. Keys are held only as SHA-256 hashes; a presented key is hashed
// and looked up. Immutable after construction; safe to share across threads.

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/types.h"

namespace powerplane::gateway {

struct Tenant {
  std::string id;
  std::vector<std::string> jurisdictions;  // empty = any.
  core::PriorityClass priority = core::PriorityClass::kInteractive;
  double ttft_target_s = 1.0;
  double tpot_target_s = 0.05;
};

class TenantDirectory {
 public:
  // Registers `tenant` under each hex SHA-256 key hash.
  void Add(Tenant tenant, const std::vector<std::string>& key_sha256);
  // The tenant whose key this is, or null.
  std::shared_ptr<const Tenant> Authenticate(std::string_view api_key) const;
  std::size_t size() const { return by_hash_.size(); }

 private:
  std::unordered_map<std::string, std::shared_ptr<const Tenant>> by_hash_;
};

// The key from "Authorization: Bearer <key>", or empty.
std::string_view BearerToken(std::string_view authorization);

}  // namespace powerplane::gateway
