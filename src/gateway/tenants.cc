#include "gateway/tenants.h"

#include "fleet/config.h"

namespace powerplane::gateway {

void TenantDirectory::Add(Tenant tenant, const std::vector<std::string>& key_sha256) {
  auto shared = std::make_shared<const Tenant>(std::move(tenant));
  for (const auto& h : key_sha256) by_hash_[h] = shared;
}

std::shared_ptr<const Tenant> TenantDirectory::Authenticate(std::string_view api_key) const {
  if (api_key.empty()) return nullptr;
  const std::string hash = fleet::Sha256Hex(api_key);
  if (hash.empty()) return nullptr;  // hashing failed: refuse rather than guess.
  auto it = by_hash_.find(hash);
  return it == by_hash_.end() ? nullptr : it->second;
}

std::string_view BearerToken(std::string_view authorization) {
  constexpr std::string_view kPrefix = "Bearer ";
  if (authorization.size() <= kPrefix.size()) return {};
  for (std::size_t i = 0; i < kPrefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kPrefix[i]))) {
      return {};
    }
  }
  auto key = authorization.substr(kPrefix.size());
  while (!key.empty() && key.front() == ' ') key.remove_prefix(1);
  while (!key.empty() && (key.back() == ' ' || key.back() == '\r')) key.remove_suffix(1);
  return key;
}

}  // namespace powerplane::gateway
