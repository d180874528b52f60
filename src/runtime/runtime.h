#pragma once
// Wiring: turns a fleet file into running parts (emulated engines, the fleet, price feeds on a
// market clock, probes, the gateway) and stops them in order. Used by `powerplane up` and by the
// integration tests, so both run exactly the same assembly.

#include <expected>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "fleet/config.h"

namespace powerplane::fleet {
class Fleet;
class GridState;
}

namespace powerplane::gateway {
class Tenancy;
}

namespace powerplane::runtime {

struct UpOptions {
  std::string listen;               // overrides the config's gateway.listen when set.
  std::filesystem::path data_dir;   // the repository's data/ folder.
  std::string market_start;         // overrides market.start when set.
  double market_speed = 0;          // overrides market.speed when > 0.
  double engine_speed = 1.0;        // emulated engines' time factor.
  int threads = 0;                  // gateway I/O threads; 0 = one per core.
  // Concurrent connections per listener; 0 = as many as RLIMIT_NOFILE allows (two per stream).
  std::size_t max_connections = 0;
  // How long a non-streaming request may wait for an engine's whole answer, in seconds.
  int upstream_timeout_s = 600;
  // How long a streaming request waits for an engine's response head before the engine is
  // deemed hung and the next is tried (gateway::GatewayOptions::stream_head_timeout).
  std::chrono::milliseconds stream_head_timeout{10000};
  // Each request's ledger row is committed and flushed to disk (group commit; SQLite
  // synchronous=FULL, PostgreSQL as its synchronous_commit says) before its last bytes, so it
  // survives a power loss; the journal only replays what an earlier run left, and takes a row
  // whose commit failed. By default a row is journaled (durable across a crash of the process)
  // and reaches the store in the next batch. No effect without a store.
  bool sync_ledger = false;
  // SO_REUSEPORT on the API listener: several gateway processes on one host share its port (the
  // --admin-listen listener stays each process's own).
  bool reuse_port = false;
  // The requests- and tokens-per-minute buckets live in this file, shared by every gateway
  // process of the host that names it (gateway/shared_buckets.h). Empty: with reuse_port and a
  // state_dir, <state_dir>/rate-limits; otherwise each process keeps its own.
  std::filesystem::path limits_file;
  // OpenADR 3: override the fleet file's [openadr] keys when set.
  std::string openadr_vtn;
  std::string openadr_client_id;
  std::string openadr_client_secret;
  // The tenancy store: SQLite in `state_dir` (powerplane.db), or `store_url` (postgresql://...)
  // when set. Both empty = no store: the fleet file's tenants only, no ledger.
  std::filesystem::path state_dir;
  std::string store_url;
  // When set, the admin API is served only here (HOST:PORT), not on the API listener.
  std::string admin_listen;
  // TLS for the API (both PEM files, or neither).
  std::string tls_cert_file;
  std::string tls_key_file;
  // How long Stop lets requests under way finish (streams included) before it cuts them.
  std::chrono::milliseconds shutdown_grace{20000};
};

class Runtime {
 public:
  ~Runtime();
  // Builds and starts everything; errors name the offending input.
  static std::expected<std::unique_ptr<Runtime>, std::string> Start(const fleet::FleetConfig& config,
                                                                    const UpOptions& options);
  // Stops taking connections and closes idle ones, waits (up to UpOptions::shutdown_grace, or
  // until Hurry) for the requests under way to finish, then stops the gateway, probes, engines
  // and threads. A request still under way after that is cut: the emulated engines stop first,
  // so a stream to one of them ends with an error event and [DONE]. Idempotent.
  void Stop();
  // Ends Stop's wait for requests under way now (a second signal). Thread-safe.
  void Hurry();

  unsigned short port() const;
  unsigned short admin_port() const;  // 0 without a separate admin listener.
  std::string host() const;
  fleet::Fleet& fleet();
  fleet::GridState& grid();
  // The gateway's tenancy (tenants, limits, ledger); its store is null without one.
  gateway::Tenancy& tenancy();
  std::size_t emulated_engines() const;
  // Stops or restarts one emulated engine (by fleet endpoint index), to exercise failover.
  void StopEngine(std::size_t endpoint);
  void RestartEngine(std::size_t endpoint);
  // One line per fact for the terminal: URLs, keys, market time.
  std::string Banner() const;

 private:
  Runtime();
  struct Parts;
  std::unique_ptr<Parts> parts_;
};

// Starts, prints the banner, runs until SIGINT or SIGTERM, stops. Returns the exit code.
int RunUntilSignal(const fleet::FleetConfig& config, const UpOptions& options);

}  // namespace powerplane::runtime
