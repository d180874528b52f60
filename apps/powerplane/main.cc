// powerplane: one binary, subcommands. Flag parsing and wiring only.
//   powerplane up       the gateway over a fleet (the demo fleet without --config)
//   powerplane gateway  the same, for a fleet file whose endpoints run elsewhere
//   powerplane engine   the engine emulator alone, standing in for a GPU server
//   powerplane sim      the digital twin: replay traces and prices through the policies
//   powerplane keys     API keys in the tenancy store (create, list, revoke)
//   powerplane tenants  tenants in the tenancy store (add, list)

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <filesystem>

#include "engine/engine.h"
#include "engine/gpu_profiles.h"
#include "fleet/config.h"
#include "runtime/runtime.h"
#include "sim/command.h"
#include "tenancy_commands.h"
#include "net/http.h"
#include "net/io_pool.h"

#ifdef PP_MIMALLOC
#include <mimalloc.h>
#endif

namespace {

using namespace powerplane;

// The allocator serving this process's malloc (CMakeLists.txt, PP_MIMALLOC).
std::string AllocatorName() {
#ifdef PP_MIMALLOC
  const int v = mi_version();  // e.g. 209 for 2.0.9.
  return "mimalloc " + std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." +
         std::to_string(v % 10);
#else
  return "glibc malloc";
#endif
}

std::filesystem::path DefaultDataDir() {
  std::filesystem::path built_in(PP_DATA_DIR);
  if (std::filesystem::exists(built_in)) return built_in;
  return "data";
}

int RunEngine(const std::string& listen, const std::string& gpu, const std::string& model,
              int max_batch, std::int64_t kv_tokens, double speed, std::chrono::milliseconds grace,
              const std::filesystem::path& data_dir) {
  auto profile = engine::LoadGpuProfile(gpu, data_dir);
  if (!profile) {
    spdlog::error("{}", profile.error());
    return 2;
  }
  std::string host;
  unsigned short port = 0;
  if (!net::SplitHostPort(listen, &host, &port)) {
    spdlog::error("--listen '{}': want HOST:PORT", listen);
    return 2;
  }
  engine::EngineOptions o;
  o.model = model;
  o.gpu = std::make_shared<const core::GpuModel>(std::move(*profile));
  o.max_batch = max_batch;
  o.kv_token_capacity = kv_tokens;
  o.speed = speed;
  o.name = "engine@" + listen;
  net::IoPool pool(1);
  std::unique_ptr<engine::Engine> e;
  try {
    e = std::make_unique<engine::Engine>(
        pool.context(0).get_executor(),
        net::tcp::endpoint(net::asio::ip::make_address(host), port), o);
  } catch (const std::exception& ex) {
    spdlog::error("cannot listen on {}: {}", listen, ex.what());
    return 2;
  }
  e->Start();
  pool.Start();
  std::printf("powerplane engine (EMULATOR: no model runs; timing and power follow measured %s "
              "curves) serving %s on http://%s:%u/v1 at speed %g\n",
              gpu.c_str(), model.c_str(), host.c_str(), e->port(), speed);
  std::fflush(stdout);
  net::asio::io_context main_context(1);
  net::asio::signal_set signals(main_context, SIGINT, SIGTERM);
  signals.async_wait([](boost::system::error_code, int sig) { spdlog::info("signal {}: stopping", sig); });
  main_context.run();
  // As a serving engine stops: no new request, the ones in flight finish (up to the grace, or
  // until a second signal), then the rest end with an error.
  e->Drain();
  std::atomic<bool> hurry{false};
  signals.async_wait([&hurry](boost::system::error_code ec, int) { hurry = !ec; });
  main_context.restart();
  std::thread second_signal([&main_context] { main_context.run(); });
  const auto wait_closed = [&](std::chrono::steady_clock::time_point until, bool heed_hurry) {
    while (e->open_connections() > 0 && !(heed_hurry && hurry) &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  if (const std::size_t open = e->open_connections(); open > 0) {
    spdlog::info("draining: {} connection(s) open, waiting up to {} ms for their requests "
                 "(signal again to stop at once)",
                 open, grace.count());
    wait_closed(std::chrono::steady_clock::now() + grace, true);
    if (e->open_connections() > 0) {
      // Streams end with an error event, other requests with 503, before the connections go.
      spdlog::warn("{} connection(s) still open: ending their requests", e->open_connections());
      e->EndRequests();
      wait_closed(std::chrono::steady_clock::now() + std::chrono::seconds(1), false);
    } else {
      spdlog::info("drained: every request under way has ended");
    }
  }
  signals.cancel();
  second_signal.join();
  e->Stop();
  pool.Stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"powerplane: energy-aware LLM inference over a fleet of power-owning sites"};
  app.require_subcommand(1);
  app.fallthrough();
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  std::filesystem::path data_dir = DefaultDataDir();

  runtime::UpOptions up;
  up.data_dir = data_dir;
  up.state_dir = ".powerplane";
  bool no_store = false;
  std::string config_path;
  auto add_up_flags = [&](CLI::App* c, const char* config_help) {
    c->add_option("--config", config_path, config_help);
    c->add_option("--listen", up.listen, "HOST:PORT of the API (default from the fleet file, "
                                         "127.0.0.1:8080)");
    c->add_option("--inputs-dir", up.data_dir, "folder with prices/ and energy/")
        ->capture_default_str();
    c->add_option("--data-dir", up.state_dir,
                  "folder of the tenancy store (SQLite powerplane.db: tenants, keys, ledger)")
        ->capture_default_str();
    c->add_option("--store", up.store_url,
                  "postgresql://... (a store shared by several gateways) or sqlite:PATH[?busy_timeout_ms=N]");
    c->add_flag("--no-store", no_store,
                "no store: the fleet file's tenants only, no ledger (benchmarks, tests)");
    c->add_option("--admin-listen", up.admin_listen,
                  "HOST:PORT: serve the admin API only here, not on the API listener");
    c->add_option("--tls-cert", up.tls_cert_file, "PEM certificate (chain) to serve HTTPS");
    c->add_option("--tls-key", up.tls_key_file, "PEM private key of --tls-cert");
    c->add_option("--market-start", up.market_start,
                  "market time at start, ISO 8601 (default from the fleet file)");
    c->add_option("--market-speed", up.market_speed,
                  "market seconds per real second (60 = a market hour per minute)");
    c->add_option("--engine-speed", up.engine_speed,
                  "time factor of emulated engines (1 = real time)")
        ->capture_default_str();
    c->add_option("--threads", up.threads, "gateway I/O threads (0 = one per core)")
        ->capture_default_str();
    c->add_option_function<double>(
         "--shutdown-grace",
         [&](double s) {
           up.shutdown_grace = std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000));
         },
         "seconds a stop (SIGTERM, SIGINT) lets requests under way finish before it cuts them; "
         "a second signal cuts them at once (default 20)")
        ->check(CLI::Range(0.0, 86400.0));
    c->add_option("--max-connections", up.max_connections,
                  "concurrent connections per listener, answered 503 beyond (0 = as many as "
                  "the descriptor limit allows, two per stream)")
        ->capture_default_str();
    c->add_option("--upstream-timeout", up.upstream_timeout_s,
                  "seconds a non-streaming request may wait for an engine's whole answer (then "
                  "504 upstream_timeout; the engine's work is cancelled, not tried elsewhere)")
        ->check(CLI::Range(1, 86400))
        ->capture_default_str();
    c->add_flag("--sync-ledger", up.sync_ledger,
                "commit each request's ledger row, flushed to disk (group commit), before its last "
                "bytes, so it survives a power loss; costs latency at the end of each request "
                "(SQLite synchronous=FULL; PostgreSQL: its synchronous_commit decides)");
    c->add_flag("--reuse-port", up.reuse_port,
                "share the API port with other powerplane processes started with this flag "
                "(SO_REUSEPORT): the kernel spreads new connections over them (--admin-listen "
                "stays each process's own)");
    c->add_option("--limits-file", up.limits_file,
                  "file of the requests- and tokens-per-minute buckets, shared by every gateway "
                  "process on this host that names it (default with --reuse-port: "
                  "DATA_DIR/rate-limits)");
    c->add_option("--openadr-vtn", up.openadr_vtn, "OpenADR 3 VTN base URL (http://host:port)");
    c->add_option("--openadr-client-id", up.openadr_client_id, "OAuth2 client id at the VTN");
    c->add_option("--openadr-client-secret", up.openadr_client_secret,
                  "OAuth2 client secret at the VTN");
  };
  CLI::App* up_cmd = app.add_subcommand("up", "run the gateway over a fleet (demo by default)");
  add_up_flags(up_cmd, "fleet file (TOML); the demo fleet when omitted");
  CLI::App* gw_cmd =
      app.add_subcommand("gateway", "run the gateway over a fleet file's endpoints");
  add_up_flags(gw_cmd, "fleet file (TOML) whose endpoints run elsewhere (urls = [...])");
  gw_cmd->get_option("--config")->required();

  std::string e_listen = "127.0.0.1:9101", e_gpu = "h200", e_model = "llama-3.1-8b";
  int e_max_batch = 256;
  std::int64_t e_kv = 900000;
  double e_speed = 1.0;
  CLI::App* engine_cmd =
      app.add_subcommand("engine", "run the engine emulator (an OpenAI-compatible stand-in)");
  engine_cmd->add_option("--listen", e_listen, "HOST:PORT")->capture_default_str();
  engine_cmd->add_option("--gpu", e_gpu, "GPU profile: h200, h100, h200-qwen2.5-32b")
      ->capture_default_str();
  engine_cmd->add_option("--model", e_model, "model name served")->capture_default_str();
  engine_cmd->add_option("--max-batch", e_max_batch, "sequences per decode step")
      ->capture_default_str();
  engine_cmd->add_option("--kv-tokens", e_kv, "KV cache capacity in tokens")
      ->capture_default_str();
  engine_cmd->add_option("--speed", e_speed, "time factor (1 = real time)")->capture_default_str();
  double e_grace_s = 20;
  engine_cmd->add_option("--shutdown-grace", e_grace_s,
                         "seconds a stop (SIGTERM, SIGINT) lets requests in flight finish; a "
                         "second signal ends them at once")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  engine_cmd->add_option("--inputs-dir", data_dir, "folder with energy/")->capture_default_str();

  sim::SimCommandOptions sim_opts;
  sim_opts.data_dir = data_dir;
  CLI::App* sim_cmd = app.add_subcommand(
      "sim", "digital twin: replay a trace and real prices through the routing policies");
  sim_cmd->add_option("--fleet", sim_opts.fleet_path, "fleet file (TOML); the demo fleet when "
                                                      "omitted");
  sim_cmd->add_option("--trace", sim_opts.trace_path,
                      "requests, Azure schema (default: DATA/traces/azure-llm-2023-conv.csv)");
  sim_cmd->add_option("--rate-curve", sim_opts.rate_curve_path,
                      "timestamp_s,total_rate_rps series shaping arrivals (sizes from --trace)");
  auto* scale_opt = sim_cmd->add_option_function<double>(
      "--rate-scale", [&](double v) { sim_opts.rate_scale = v; }, "multiply the arrival rate");
  sim_cmd->add_option_function<double>("--load", [&](double v) { sim_opts.load = v; },
                                       "mean rate as a fraction of the fleet's sustainable rate")
      ->excludes(scale_opt);
  sim_cmd->add_option("--prices", sim_opts.prices, "SITE=FILE[:COLUMN] price override (repeat)");
  sim_cmd->add_option("--events", sim_opts.events_path,
                      "grid events CSV: site,start_utc,duration_s,target_kw,ramp_s");
  sim_cmd->add_option("--tenant-mix", sim_opts.tenant_mix, "TENANT=WEIGHT,... share of requests");
  sim_cmd->add_option("--start", sim_opts.start, "UTC start, ISO 8601 (default: fleet market "
                                                 "start)");
  sim_cmd->add_option("--duration", sim_opts.duration, "1h, 1d, 7d or seconds")
      ->capture_default_str();
  sim_cmd->add_option("--seed", sim_opts.seed, "arrival randomness")->capture_default_str();
  sim_cmd->add_option("--policy", sim_opts.policy,
                      "round-robin, least-loaded, nearest, cheapest-price, powerplane or all")
      ->capture_default_str();
  sim_cmd->add_option("--out", sim_opts.out_dir, "output folder")->capture_default_str();
  sim_cmd->add_option("--inputs-dir", sim_opts.data_dir, "folder with prices/, energy/, traces/")
      ->capture_default_str();
  sim_cmd->add_flag("!--no-bound", sim_opts.bound, "skip the hindsight LP bound");
  sim_cmd->add_flag("!--no-progress", sim_opts.progress, "no progress bar");
  sim_cmd->add_flag("--fixed-output-length", sim_opts.fixed_output_length,
                    "plan with the default output length, not each tenant's learned one");

  cli::TenancyCommands tenancy_commands(app);

  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));

  if (sim_cmd->parsed()) return sim::RunSimCommand(sim_opts);
  if (int rc = tenancy_commands.Run(); rc >= 0) return rc;
  if (no_store && up.sync_ledger) {
    spdlog::error("--sync-ledger needs a store: drop --no-store");
    return 2;
  }
  if (no_store) {
    up.state_dir.clear();
    up.store_url.clear();
  }
  if (engine_cmd->parsed()) {
    const std::chrono::milliseconds e_grace(static_cast<std::int64_t>(e_grace_s * 1000));
    return RunEngine(e_listen, e_gpu, e_model, e_max_batch, e_kv, e_speed, e_grace, data_dir);
  }
  fleet::FleetConfig config;
  if (config_path.empty()) {
    auto demo = fleet::ParseFleetConfig(fleet::DemoConfigToml(), "demo fleet");
    if (!demo) {
      spdlog::error("{}", demo.error());
      return 2;
    }
    config = std::move(*demo);
  } else {
    auto loaded = fleet::LoadFleetConfig(config_path);
    if (!loaded) {
      spdlog::error("{}", loaded.error());
      return 2;
    }
    config = std::move(*loaded);
  }
  spdlog::info("allocator: {}", AllocatorName());
  return runtime::RunUntilSignal(config, up);
}
