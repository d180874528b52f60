#include "fleet/config.h"

#include <openssl/evp.h>

#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace powerplane::fleet {
namespace {

#include "fleet/demo_config.inc"

std::string Where(const toml::node& node, std::string_view source) {
  const auto& s = node.source();
  std::ostringstream out;
  out << source << ":" << s.begin.line << ":" << s.begin.column;
  return out.str();
}

// Reads an optional value of type T; a present value of the wrong type is an error.
template <typename T>
bool Read(const toml::table& t, std::string_view key, T* out, std::string_view source,
          std::string* error) {
  const toml::node* n = t.get(key);
  if (!n) return true;
  if constexpr (std::is_same_v<T, double>) {
    if (auto v = n->value<double>()) {
      *out = *v;
      return true;
    }
  } else if constexpr (std::is_same_v<T, int> || std::is_same_v<T, std::int64_t>) {
    if (auto v = n->value<std::int64_t>()) {
      *out = static_cast<T>(*v);
      return true;
    }
  } else if constexpr (std::is_same_v<T, bool>) {
    if (auto v = n->value<bool>()) {
      *out = *v;
      return true;
    }
  } else {
    if (auto v = n->value<std::string>()) {
      *out = *v;
      return true;
    }
  }
  *error = Where(*n, source) + ": '" + std::string(key) + "' has the wrong type";
  return false;
}

bool ReadStrings(const toml::table& t, std::string_view key, std::vector<std::string>* out,
                 std::string_view source, std::string* error) {
  const toml::node* n = t.get(key);
  if (!n) return true;
  const toml::array* a = n->as_array();
  if (!a) {
    *error = Where(*n, source) + ": '" + std::string(key) + "' must be an array of strings";
    return false;
  }
  for (const auto& item : *a) {
    auto v = item.value<std::string>();
    if (!v) {
      *error = Where(item, source) + ": '" + std::string(key) + "' must hold strings";
      return false;
    }
    out->push_back(*v);
  }
  return true;
}

}  // namespace

int FleetConfig::EndpointCount() const {
  int n = 0;
  for (const auto& s : sites)
    for (const auto& g : s.endpoints) n += g.count;
  return n;
}

std::string_view DemoConfigToml() { return kDemoConfigToml; }

bool Sha256(std::string_view text, Sha256Digest* digest) {
  // The digest is fetched once and a context kept per thread: OpenSSL 3's implicit fetch in
  // EVP_Digest costs more than hashing a key. This runs on every authenticated request (77 ns
  // for a 35-byte key here, docs/benchmarks.md).
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                          &EVP_MD_CTX_free);
  unsigned int length = 0;
  return kSha256 && ctx && EVP_DigestInit_ex(ctx.get(), kSha256, nullptr) &&
         EVP_DigestUpdate(ctx.get(), text.data(), text.size()) &&
         EVP_DigestFinal_ex(ctx.get(), digest->data(), &length) && length == digest->size();
}

std::string Sha256Hex(std::string_view text) {
  Sha256Digest digest;
  if (!Sha256(text, &digest)) return {};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(digest.size() * 2);
  for (const unsigned char byte : digest) {
    out.push_back(kHex[byte >> 4]);
    out.push_back(kHex[byte & 15]);
  }
  return out;
}

bool ParseSha256Hex(std::string_view hex, Sha256Digest* digest) {
  if (hex.size() != digest->size() * 2) return false;
  const auto nibble = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < digest->size(); ++i) {
    const int high = nibble(hex[2 * i]), low = nibble(hex[2 * i + 1]);
    if (high < 0 || low < 0) return false;
    (*digest)[i] = static_cast<unsigned char>(high * 16 + low);
  }
  return true;
}

std::expected<FleetConfig, std::string> ParseFleetConfig(std::string_view toml_text,
                                                         std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
        << e.description();
    return std::unexpected(out.str());
  }
  FleetConfig c;
  std::string error;
  auto fail = [&](std::string message) { return std::unexpected(std::move(message)); };

  if (const auto* g = root["gateway"].as_table()) {
    std::string admin_key, admin_key_sha256;
    if (!Read(*g, "listen", &c.listen, source, &error) ||
        !Read(*g, "admin_key", &admin_key, source, &error) ||
        !Read(*g, "admin_key_sha256", &admin_key_sha256, source, &error) ||
        !Read(*g, "default_output_tokens", &c.default_output_tokens, source, &error) ||
        !Read(*g, "latency_breaker", &c.latency_breaker, source, &error)) {
      return fail(error);
    }
    c.admin_key_sha256 = !admin_key_sha256.empty() ? admin_key_sha256
                         : admin_key.empty()        ? ""
                                                    : Sha256Hex(admin_key);
  }
  if (const auto* m = root["market"].as_table()) {
    if (!Read(*m, "start", &c.market_start, source, &error) ||
        !Read(*m, "speed", &c.market_speed, source, &error)) {
      return fail(error);
    }
    if (c.market_speed <= 0) return fail(std::string(source) + ": market.speed must be > 0");
  }

  if (const auto* m = root["mining"].as_table()) {
    if (!Read(*m, "hashprice_usd_per_ph_day", &c.hashprice_usd_per_ph_day, source, &error)) {
      return fail(error);
    }
  }
  if (const auto* f = root["flex"].as_table()) {
    if (!Read(*f, "inference_usd_per_mtok", &c.inference_usd_per_mtok, source, &error) ||
        !Read(*f, "cap_slew_watts_per_s", &c.cap_slew_watts_per_s, source, &error)) {
      return fail(error);
    }
  }
  if (const auto* o = root["openadr"].as_table()) {
    if (!Read(*o, "vtn", &c.openadr_vtn, source, &error) ||
        !Read(*o, "client_id", &c.openadr_client_id, source, &error) ||
        !Read(*o, "client_secret", &c.openadr_client_secret, source, &error) ||
        !Read(*o, "poll_interval_ms", &c.openadr_poll_interval_ms, source, &error)) {
      return fail(error);
    }
    if (c.openadr_poll_interval_ms < 100) {
      return fail(std::string(source) + ": openadr.poll_interval_ms must be >= 100");
    }
  }
  const toml::array* sites = root["sites"].as_array();
  if (!sites || sites->empty()) return fail(std::string(source) + ": no [[sites]]");
  std::set<std::string> site_ids;
  for (const auto& node : *sites) {
    const toml::table* t = node.as_table();
    if (!t) return fail(Where(node, source) + ": [[sites]] entries must be tables");
    SiteConfig s;
    if (!Read(*t, "id", &s.id, source, &error) ||
        !Read(*t, "jurisdiction", &s.jurisdiction, source, &error) ||
        !Read(*t, "pue", &s.pue, source, &error) ||
        !Read(*t, "network_rtt_ms", &s.network_rtt_ms, source, &error)) {
      return fail(error);
    }
    if (!Read(*t, "base_kw", &s.base_kw, source, &error) ||
        !Read(*t, "grid_import_limit_kw", &s.grid_import_limit_kw, source, &error) ||
        !Read(*t, "gpu_min_cap_watts", &s.gpu_min_cap_watts, source, &error)) {
      return fail(error);
    }
    if (const toml::table* m = t->get_as<toml::table>("miners")) {
      if (!Read(*m, "count", &s.miners.count, source, &error) ||
          !Read(*m, "th_per_s", &s.miners.th_per_s, source, &error) ||
          !Read(*m, "watts", &s.miners.watts, source, &error)) {
        return fail(error);
      }
      if (s.miners.count < 0 || s.miners.th_per_s < 0 || s.miners.watts < 0 ||
          (s.miners.count > 0 && (s.miners.th_per_s == 0 || s.miners.watts == 0))) {
        return fail(Where(*m, source) + ": miners need count, th_per_s and watts > 0");
      }
    }
    if (const toml::table* g = t->get_as<toml::table>("gas")) {
      if (!Read(*g, "capacity_kw", &s.gas.capacity_kw, source, &error) ||
          !Read(*g, "fuel_usd_per_mmbtu", &s.gas.fuel_usd_per_mmbtu, source, &error) ||
          !Read(*g, "heat_rate_btu_per_kwh", &s.gas.heat_rate_btu_per_kwh, source, &error)) {
        return fail(error);
      }
      if (s.gas.capacity_kw < 0 || s.gas.fuel_usd_per_mmbtu < 0 ||
          s.gas.heat_rate_btu_per_kwh <= 0) {
        return fail(Where(*g, source) +
                    ": gas needs capacity_kw >= 0, fuel_usd_per_mmbtu >= 0, heat_rate_btu_per_kwh > 0");
      }
    }
    if (const toml::table* w = t->get_as<toml::table>("wind")) {
      if (!Read(*w, "capacity_kw", &s.wind.capacity_kw, source, &error) ||
          !Read(*w, "profile", &s.wind.profile, source, &error) ||
          !Read(*w, "can_export", &s.wind.can_export, source, &error)) {
        return fail(error);
      }
      if (s.wind.capacity_kw > 0 && s.wind.profile.empty()) {
        return fail(Where(*w, source) + ": wind needs a capacity-factor profile file");
      }
    }
    if (s.id.empty()) return fail(Where(node, source) + ": a site needs an id");
    if (!site_ids.insert(s.id).second) {
      return fail(Where(node, source) + ": duplicate site id '" + s.id + "'");
    }
    if (s.jurisdiction.empty()) {
      return fail(Where(node, source) + ": site '" + s.id + "' needs a jurisdiction");
    }
    if (s.pue < 1.0) return fail(Where(node, source) + ": site '" + s.id + "': pue must be >= 1");
    if (const toml::node* p = t->get("price")) {
      if (auto fixed = p->value<double>()) {
        s.price.fixed_usd_per_mwh = *fixed;
      } else if (const toml::table* pt = p->as_table()) {
        if (!Read(*pt, "format", &s.price.format, source, &error) ||
            !Read(*pt, "file", &s.price.file, source, &error) ||
            !Read(*pt, "column", &s.price.column, source, &error) ||
            !Read(*pt, "usd_per_mwh", &s.price.fixed_usd_per_mwh, source, &error)) {
          return fail(error);
        }
        if (!s.price.format.empty() && s.price.file.empty()) {
          return fail(Where(*p, source) + ": price of site '" + s.id + "' needs a file");
        }
      } else {
        return fail(Where(*p, source) + ": price must be a number (USD/MWh) or a table");
      }
    }
    if (const toml::array* eps = t->get_as<toml::array>("endpoints")) {
      for (const auto& en : *eps) {
        const toml::table* et = en.as_table();
        if (!et) return fail(Where(en, source) + ": [[sites.endpoints]] must be tables");
        EndpointGroupConfig e;
        if (!Read(*et, "count", &e.count, source, &error) ||
            !Read(*et, "gpu", &e.gpu, source, &error) ||
            !Read(*et, "model", &e.model, source, &error) ||
            !Read(*et, "emulate", &e.emulate, source, &error) ||
            !ReadStrings(*et, "urls", &e.urls, source, &error) ||
            !Read(*et, "max_batch", &e.max_batch, source, &error) ||
            !Read(*et, "max_queue", &e.max_queue, source, &error) ||
            !Read(*et, "kv_tokens", &e.kv_tokens, source, &error) ||
            !Read(*et, "hardware_usd_per_hour", &e.hardware_usd_per_hour, source, &error)) {
          return fail(error);
        }
        if (!e.urls.empty()) {
          e.emulate = false;
          if (et->get("count") == nullptr) e.count = static_cast<int>(e.urls.size());
          if (e.count != static_cast<int>(e.urls.size())) {
            return fail(Where(en, source) + ": count must equal the number of urls");
          }
        } else if (!e.emulate) {
          return fail(Where(en, source) + ": an endpoint group needs urls or emulate = true");
        }
        if (e.count < 1 || e.max_batch < 1 || e.max_queue < 0) {
          return fail(Where(en, source) + ": count and max_batch must be >= 1");
        }
        s.endpoints.push_back(std::move(e));
      }
    }
    c.sites.push_back(std::move(s));
  }

  if (const toml::array* tenants = root["tenants"].as_array()) {
    std::set<std::string> ids;
    for (const auto& node : *tenants) {
      const toml::table* t = node.as_table();
      if (!t) return fail(Where(node, source) + ": [[tenants]] entries must be tables");
      TenantConfig tc;
      std::vector<std::string> plain_keys;
      std::string cls = "interactive";
      if (!Read(*t, "id", &tc.id, source, &error) ||
          !ReadStrings(*t, "keys", &plain_keys, source, &error) ||
          !ReadStrings(*t, "key_sha256", &tc.key_sha256, source, &error) ||
          !ReadStrings(*t, "jurisdictions", &tc.jurisdictions, source, &error) ||
          !Read(*t, "class", &cls, source, &error) ||
          !Read(*t, "ttft_target_ms", &tc.ttft_target_ms, source, &error) ||
          !Read(*t, "tpot_target_ms", &tc.tpot_target_ms, source, &error)) {
        return fail(error);
      }
      if (tc.id.empty() || !ids.insert(tc.id).second) {
        return fail(Where(node, source) + ": a tenant needs a unique id");
      }
      if (!core::ParsePriorityClass(cls, &tc.priority)) {
        return fail(Where(node, source) + ": class must be interactive, standard or batch");
      }
      for (const auto& k : plain_keys) tc.key_sha256.push_back(Sha256Hex(k));
      c.tenants.push_back(std::move(tc));
    }
  }
  return c;
}

std::expected<FleetConfig, std::string> LoadFleetConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::unexpected(path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return ParseFleetConfig(text.str(), path);
}

}  // namespace powerplane::fleet
