#pragma once
// The fleet file (TOML): gateway settings, the market clock, sites with their price sources and
// endpoints (declared in bulk with `count`), and tenants with their keys and rules. The same
// format describes a 14-GPU demo and a 10,000-GPU fleet. See examples/demo.toml.

#include <array>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/types.h"

namespace powerplane::fleet {

struct PriceSourceConfig {
  std::string format;  // "ercot", "de-lu", "generic"; empty = a fixed price.
  std::string file;    // relative paths resolve against the data directory.
  std::string column;  // ERCOT: the settlement point column, e.g. "HB_NORTH_RTM".
  double fixed_usd_per_mwh = 0;
};

struct EndpointGroupConfig {
  int count = 1;
  std::string gpu = "h200";
  std::string model = "llama-3.1-8b";
  bool emulate = true;              // start an emulator in this process for each endpoint.
  std::vector<std::string> urls;    // when not emulated: one base URL per endpoint.
  int max_batch = 256;
  int max_queue = 256;
  std::int64_t kv_tokens = 900000;
  double hardware_usd_per_hour = 2.0;
};

// Emulated miners at a site: a flexible load that starts and stops at once.
struct MinerConfig {
  int count = 0;
  double th_per_s = 0;  // each.
  double watts = 0;     // each.
  double JoulesPerTh() const { return th_per_s > 0 ? watts / th_per_s : 0; }
  double Kw() const { return count * watts / 1e3; }
};

// Behind-the-meter generation: capacity x an hourly capacity-factor profile.
struct GenerationConfig {
  double capacity_kw = 0;
  std::string profile;  // relative to the data directory.
  bool can_export = false;
};

// On-site gas generation: dispatchable at once, at fuel x heat rate.
struct GasConfig {
  double capacity_kw = 0;
  double fuel_usd_per_mmbtu = 3.0;
  double heat_rate_btu_per_kwh = 8500;  // a reciprocating-engine or aeroderivative plant.
};

struct SiteConfig {
  std::string id;
  std::string jurisdiction;
  double pue = 1.2;
  double network_rtt_ms = 0;
  double base_kw = 0;                   // facility load besides GPUs x PUE and miners.
  double grid_import_limit_kw = 1e9;    // the grid connection.
  double gpu_min_cap_watts = 300;       // the lowest GPU power cap the controller may set.
  PriceSourceConfig price;
  std::vector<EndpointGroupConfig> endpoints;
  MinerConfig miners;
  GenerationConfig wind;
  GasConfig gas;
};

struct TenantConfig {
  std::string id;
  std::vector<std::string> key_sha256;  // hex SHA-256 of each API key (plain keys are hashed).
  std::vector<std::string> jurisdictions;  // empty = any.
  core::PriorityClass priority = core::PriorityClass::kInteractive;
  double ttft_target_ms = 1000;
  double tpot_target_ms = 50;
};

struct FleetConfig {
  std::string listen = "127.0.0.1:8080";
  std::string admin_key_sha256;       // empty = the admin API is disabled.
  int default_output_tokens = 256;
  // Take an endpoint out when it answers far slower than predicted (fleet::Fleet::ReportAnswer).
  // Off for engines deliberately slowed (emulators at a speed below 1).
  bool latency_breaker = true;
  std::string market_start = "2024-08-19T00:00:00-05:00";
  double market_speed = 60;
  double hashprice_usd_per_ph_day = 38;  // late 2025 (data/README.md).
  double inference_usd_per_mtok = 0.20;  // what a token sells for, for dispatch economics.
  double cap_slew_watts_per_s = 100;     // how fast GPU caps rise when a constraint lifts.
  // An OpenADR 3 VTN to take grid events from (empty = none).
  std::string openadr_vtn;
  std::string openadr_client_id;
  std::string openadr_client_secret;
  int openadr_poll_interval_ms = 2000;
  std::vector<SiteConfig> sites;
  std::vector<TenantConfig> tenants;

  int EndpointCount() const;
};

// Parses the TOML text; errors name the source, line and column, or the offending key.
std::expected<FleetConfig, std::string> ParseFleetConfig(std::string_view toml_text,
                                                         std::string_view source_name);
std::expected<FleetConfig, std::string> LoadFleetConfig(const std::string& path);

// The demo fleet (examples/demo.toml, compiled in).
std::string_view DemoConfigToml();

using Sha256Digest = std::array<unsigned char, 32>;
// The SHA-256 of `text`; false when OpenSSL failed.
bool Sha256(std::string_view text, Sha256Digest* digest);
// Lower-case hex SHA-256 of `text` (empty when OpenSSL failed).
std::string Sha256Hex(std::string_view text);
// A digest from its 64 hex digits (either case); false when `hex` is not that.
bool ParseSha256Hex(std::string_view hex, Sha256Digest* digest);

}  // namespace powerplane::fleet
