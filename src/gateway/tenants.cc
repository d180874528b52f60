#include "gateway/tenants.h"

#include "fleet/config.h"

namespace powerplane::gateway {

void TenantDirectory::Add(Tenant tenant, const std::vector<std::string>& key_sha256) {
  auto shared = std::make_shared<const Tenant>(std::move(tenant));
  by_id_[shared->id] = shared;
  for (std::size_t i = 0; i < key_sha256.size(); ++i) {
    fleet::Sha256Digest digest;
    if (!fleet::ParseSha256Hex(key_sha256[i], &digest)) continue;
    by_hash_[digest] = {shared, "cfg_" + shared->id + "_" + std::to_string(i)};
  }
}

void TenantDirectory::AddKey(std::shared_ptr<const Tenant> tenant, std::string_view key_sha256,
                             std::string key_id) {
  by_id_[tenant->id] = tenant;
  fleet::Sha256Digest digest;
  if (!fleet::ParseSha256Hex(key_sha256, &digest)) return;
  by_hash_[digest] = {std::move(tenant), std::move(key_id)};
}

Identity TenantDirectory::Authenticate(std::string_view api_key) const {
  if (api_key.empty()) return {};
  fleet::Sha256Digest digest;
  if (!fleet::Sha256(api_key, &digest)) return {};  // hashing failed: refuse rather than guess.
  auto it = by_hash_.find(digest);
  if (it == by_hash_.end()) return {};
  return {it->second.tenant, it->second.key_id};
}

std::shared_ptr<const Tenant> TenantDirectory::Find(std::string_view tenant_id) const {
  auto it = by_id_.find(std::string(tenant_id));
  return it == by_id_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const Tenant>> TenantDirectory::Tenants() const {
  std::vector<std::shared_ptr<const Tenant>> out;
  out.reserve(by_id_.size());
  for (const auto& [id, tenant] : by_id_) out.push_back(tenant);
  return out;
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
