#pragma once
// `powerplane keys create|list|revoke` and `powerplane tenants add|list`: the tenancy store from
// the command line (the same store the gateway uses: --data-dir DIR or --store URL).

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

namespace powerplane::cli {

struct StoreFlags {
  std::filesystem::path data_dir = ".powerplane";
  std::string store_url;
};

// Adds the `keys` and `tenants` subcommands to `app`; Run returns -1 when neither was parsed.
class TenancyCommands {
 public:
  explicit TenancyCommands(CLI::App& app);
  int Run();

 private:
  StoreFlags store_;
  CLI::App* keys_ = nullptr;
  CLI::App* keys_create_ = nullptr;
  CLI::App* keys_list_ = nullptr;
  CLI::App* keys_revoke_ = nullptr;
  CLI::App* tenants_ = nullptr;
  CLI::App* tenants_add_ = nullptr;
  CLI::App* tenants_list_ = nullptr;
  std::string tenant_, key_id_, jurisdictions_, priority_class_ = "standard",
                                                budget_period_ = "none";
  std::int64_t latency_target_ms_ = 0, rpm_ = 0, tpm_ = 0;
  double budget_usd_ = 0;
};

}  // namespace powerplane::cli
