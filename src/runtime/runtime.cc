#include "runtime/runtime.h"

#include <spdlog/spdlog.h>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <thread>

#include <sys/resource.h>

#include "engine/engine.h"
#include "engine/gpu_profiles.h"
#include "core/dispatch.h"
#include "core/flex.h"
#include "core/site_power.h"
#include "fleet/fleet.h"
#include "fleet/grid_state.h"
#include "grid/generation.h"
#include "fleet/prober.h"
#include "gateway/gateway.h"
#include "gateway/tenancy.h"
#include "store/store.h"
#include "grid/market_clock.h"
#include "grid/price_loaders.h"
#include "grid/time.h"
#include "net/http_server.h"
#include "net/io_pool.h"
#include "openadr/ven.h"

namespace powerplane::runtime {
namespace {

using Clock = std::chrono::system_clock;

// "http://host:port" or "host:port".
bool ParseEndpointUrl(std::string_view url, fleet::EndpointAddress* out) {
  if (url.starts_with("http://")) url.remove_prefix(7);
  while (url.ends_with("/")) url.remove_suffix(1);
  return net::SplitHostPort(url, &out->host, &out->port);
}

std::filesystem::path Resolve(const std::filesystem::path& data_dir, const std::string& file) {
  std::filesystem::path p(file);
  return p.is_absolute() ? p : data_dir / p;
}

// A listener at `address` (HOST:PORT) serving `handler` on `executors`, with the TLS files of
// `options`, sharing its port with other processes when `reuse_port`; the error names the
// address. `host`, when given, receives the host part.
std::expected<std::unique_ptr<net::HttpServer>, std::string> Listen(
    const std::string& address, std::vector<net::asio::any_io_executor> executors,
    net::Handler handler, const UpOptions& options, std::size_t max_connections,
    bool reuse_port, std::string* host = nullptr) {
  std::string h;
  unsigned short port = 0;
  if (!net::SplitHostPort(address, &h, &port)) {
    return std::unexpected("listen address '" + address + "': want HOST:PORT");
  }
  if (host) *host = h;
  try {
    net::ServerOptions so;
    so.max_connections = max_connections;
    so.reuse_port = reuse_port;
    so.tls_cert_file = options.tls_cert_file;
    so.tls_key_file = options.tls_key_file;
    return std::make_unique<net::HttpServer>(
        std::move(executors), net::tcp::endpoint(net::asio::ip::make_address(h), port),
        std::move(handler), so);
  } catch (const boost::system::system_error& e) {
    // Its what() names Boost's source file and function: the code's message says it all.
    return std::unexpected("cannot listen on " + address + ": " + e.code().message());
  } catch (const std::exception& e) {
    return std::unexpected("cannot listen on " + address + ": " + e.what());
  }
}

// Whether `address` (HOST:PORT; empty or port 0: nothing to check) can be bound now: a trial
// bind, released at once.
std::expected<void, std::string> CheckBindable(const std::string& address, bool reuse_port) {
  std::string h;
  unsigned short port = 0;
  if (address.empty() || !net::SplitHostPort(address, &h, &port) || port == 0) return {};
  boost::system::error_code ec;
  const auto ip = net::asio::ip::make_address(h, ec);
  if (ec) return std::unexpected("cannot listen on " + address + ": " + ec.message());
  net::asio::io_context io;
  net::tcp::acceptor trial(io);
  const net::tcp::endpoint ep(ip, port);
  trial.open(ep.protocol(), ec);
  if (!ec) trial.set_option(net::asio::socket_base::reuse_address(true), ec);
  if (!ec && reuse_port) {
    trial.set_option(net::asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true), ec);
  }
  if (!ec) trial.bind(ep, ec);
  if (ec) return std::unexpected("cannot listen on " + address + ": " + ec.message());
  return {};
}

// Descriptors the process keeps for itself (listeners, engine pools, the store, logs, epoll).
constexpr std::size_t kReservedDescriptors = 64;

// The fields a fleet file's tenant sets (jurisdictions, class, latency target) in which the
// store's `stored` differs from the file's `file`, as "jurisdictions [EU] (file: any)"; empty
// when none does.
std::string SeedDifference(const store::TenantRecord& stored, const store::TenantRecord& file) {
  auto list = [](const std::vector<std::string>& v) {
    if (v.empty()) return std::string("any");
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
    return out + "]";
  };
  std::string out;
  auto add = [&out](std::string_view field, const std::string& ours, const std::string& theirs) {
    if (ours == theirs) return;
    out += (out.empty() ? "" : ", ") + std::string(field) + " " + ours + " (file: " + theirs + ")";
  };
  add("jurisdictions", list(stored.jurisdictions), list(file.jurisdictions));
  add("class", stored.priority_class, file.priority_class);
  add("latency target", std::to_string(stored.latency_target_ms) + " ms",
      std::to_string(file.latency_target_ms) + " ms");
  return out;
}

// The bound on concurrent connections of each listener: `asked`, or (when 0) as many as the
// descriptor limit allows at two per stream (client and engine). Raises the soft RLIMIT_NOFILE
// to the hard limit first, as nginx's worker_rlimit_nofile would.
std::size_t ConnectionBound(std::size_t asked) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return asked ? asked : 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  const std::size_t descriptors = limit.rlim_cur == RLIM_INFINITY
                                      ? std::size_t{1} << 20
                                      : static_cast<std::size_t>(limit.rlim_cur);
  const std::size_t fits =
      descriptors > 2 * kReservedDescriptors ? (descriptors - kReservedDescriptors) / 2 : 64;
  if (asked == 0) {
    spdlog::info("at most {} concurrent connections (descriptor limit {}, two per stream)", fits,
                 descriptors);
    return fits;
  }
  if (asked > fits) {
    spdlog::warn("--max-connections {} is more than the descriptor limit {} allows at two per "
                 "stream ({}): streams past that fail to reach an engine",
                 asked, descriptors, fits);
  }
  return asked;
}

}  // namespace

struct Runtime::Parts {
  std::unique_ptr<grid::MarketClock> market;
  std::vector<grid::PriceSeries> prices;
  std::unique_ptr<net::IoPool> engine_pool;
  std::unique_ptr<net::IoPool> gateway_pool;
  std::vector<std::unique_ptr<engine::Engine>> engines;          // by emulated index.
  std::vector<engine::EngineOptions> engine_options;             // to restart them.
  std::vector<std::int64_t> engine_of_endpoint;                  // -1 = external.
  std::unique_ptr<fleet::Fleet> fleet;
  std::shared_ptr<gateway::Tenancy> tenancy;
  std::unique_ptr<gateway::Gateway> gateway;
  // Polls the store for tenant and key changes (revocations from any gateway) and resyncs budgets.
  std::thread tenancy_poller;
  std::mutex poll_mu;
  std::condition_variable poll_wake;
  std::unique_ptr<net::HttpServer> server;
  std::unique_ptr<net::HttpServer> admin_server;  // only with --admin-listen.
  std::unique_ptr<fleet::Prober> prober;
  std::unique_ptr<net::asio::steady_timer> price_timer;
  // The grid side: events, hashprice, the FlexController and what it last decided.
  std::vector<fleet::SiteConfig> site_configs;
  std::vector<std::optional<grid::CapacityFactorProfile>> wind;
  std::unique_ptr<fleet::GridState> grid_state;
  std::unique_ptr<core::FlexController> flex;
  std::vector<core::SitePlan> plans;
  std::unique_ptr<net::asio::steady_timer> flex_timer;
  std::unique_ptr<openadr::Ven> ven;
  std::vector<std::vector<std::uint32_t>> endpoints_of_site;  // fleet endpoint indices per site.
  std::vector<double> deferrable_kw_at_pause;  // per site: batch-class kW when it was paused.
  std::vector<core::SiteSupply> supply;        // per site: what the next MWh would come from.
  Clock::time_point last_flex = Clock::now();
  std::string host;
  double market_speed = 1;
  bool demo_keys = false;
  std::chrono::milliseconds shutdown_grace{0};
  std::mutex stop_mu;  // a second Stop waits for the first to end.
  bool stop_began = false;  // under stop_mu.
  std::atomic<bool> hurry{false};
  std::atomic<bool> stopped{false};

  std::size_t OpenConnections() const {
    return (server ? server->open_connections() : 0) +
           (admin_server ? admin_server->open_connections() : 0);
  }
  // Waits until no connection is open, `until` passes or (when `heed_hurry`) Hurry is called;
  // true when none is.
  bool AwaitClosed(std::chrono::steady_clock::time_point until, bool heed_hurry) const {
    while (OpenConnections() > 0) {
      if ((heed_hurry && hurry) || std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }
  // The listeners take no new connection and close idle ones; requests under way go on to
  // their end, within the grace.
  void Drain() {
    if (server) server->Drain();
    if (admin_server) admin_server->Drain();
    // The idle ones close at once (on their threads): count the rest.
    if (AwaitClosed(std::chrono::steady_clock::now() + std::chrono::milliseconds(50), false)) return;
    const std::size_t open = OpenConnections();
    spdlog::info("draining: {} connection(s) open, waiting up to {} ms for their requests "
                 "(signal again to stop at once)",
                 open, shutdown_grace.count());
    if (AwaitClosed(std::chrono::steady_clock::now() + shutdown_grace, /*heed_hurry=*/true)) {
      spdlog::info("drained: every request under way has ended");
      return;
    }
    // Cut what is left: the gateway closes its exchanges with engines (within a second: each
    // one's deadline looks at the cut as it wakes), and the emulated engines are stopped, so a
    // stream ends with an error event and [DONE] and a request not yet answered is answered
    // 503; then whatever still holds on is closed.
    spdlog::warn("{} connection(s) still open: cutting their requests", OpenConnections());
    if (gateway) gateway->BeginCut();
    for (auto& e : engines) {
      if (e) e->Stop();
    }
    AwaitClosed(std::chrono::steady_clock::now() + std::chrono::seconds(3), /*heed_hurry=*/false);
  }

  // Each site's effective marginal price (core/site_power.h): its node's price now, or what its
  // wind or gas makes the next MWh cost, from the supply seen at the last flex tick.
  void RefreshPrices() {
    const grid::UtcTime t = market->MarketTime(Clock::now());
    for (std::uint32_t s = 0; s < prices.size(); ++s) {
      supply[s].grid_usd_per_mwh = prices[s].UsdPerMwhAt(t);
      fleet->SetMarketPrice(s, core::PlanSupply(supply[s]).usd_per_mwh);
    }
  }
  // One FlexController tick: measure each site, plan, and apply (caps on emulated engines,
  // miners on or off, steering flags for the router).
  void FlexTick() {
    const auto wall = Clock::now();
    const double dt_s = std::chrono::duration<double>(wall - last_flex).count();
    last_flex = wall;
    const std::int64_t now_s =
        std::chrono::duration_cast<std::chrono::seconds>(wall.time_since_epoch()).count();
    const grid::UtcTime market_now = market->MarketTime(wall);
    const fleet::FleetStatus status = fleet->Status();
    const double hashprice = grid_state->hashprice();
    const std::vector<core::GridEvent> active_events = grid_state->Events();
    std::vector<core::SiteFlexInput> inputs;
    for (std::size_t s = 0; s < site_configs.size(); ++s) {
      const fleet::SiteConfig& c = site_configs[s];
      core::SiteFlexInput in;
      in.site = c.id;
      in.pue = c.pue;
      in.base_kw = c.base_kw;
      in.grid_import_limit_kw = c.grid_import_limit_kw;
      in.gpu_min_cap_watts = c.gpu_min_cap_watts;
      // Batch-class requests are the site's deferrable work: their share of the GPU power (by
      // count in flight) is offered to the controller as deferrable kW. While it is paused, the
      // demand measured when it paused stands in for it, so that it resumes only when it fits
      // again (not as soon as the paused work has drained).
      const fleet::SiteStatus& ss = status.sites[s];
      const double batch_share =
          ss.in_flight > 0 ? static_cast<double>(ss.in_flight_batch) / ss.in_flight : 0.0;
      const bool was_paused = s < plans.size() && plans[s].deferrable_paused;
      double deferrable_kw = ss.gpu_watts * batch_share * c.pue / 1e3;
      if (was_paused) {
        deferrable_kw = std::max(deferrable_kw, deferrable_kw_at_pause[s]);
      }
      in.deferrable_kw = deferrable_kw;
      in.gpu_watts = ss.gpu_watts * (1 - batch_share);
      in.gpus = status.sites[s].endpoints;
      if (!endpoints_of_site[s].empty()) {
        in.gpu_max_watts = fleet->endpoint(endpoints_of_site[s][0]).gpu->profile().max_watts;
      }
      const double wind_kw = wind[s] ? c.wind.capacity_kw * wind[s]->At(market_now) : 0;
      // Gas counts as usable generation when it is cheaper than the grid or an event is active
      // here (it then runs as far as needed: the dispatch below); otherwise it stands by.
      core::SiteSupply& sup = supply[s];
      sup.wind_kw = wind_kw;
      sup.can_export = c.wind.can_export;
      sup.gas_capacity_kw = c.gas.capacity_kw;
      sup.gas_usd_per_mwh = core::GasUsdPerMwh(c.gas.fuel_usd_per_mmbtu, c.gas.heat_rate_btu_per_kwh);
      const bool event_here = std::any_of(
          active_events.begin(), active_events.end(),
          [&](const core::GridEvent& e) { return e.site == c.id && e.ActiveAt(now_s); });
      const bool gas_usable = sup.gas_capacity_kw > 0 &&
                              (sup.gas_usd_per_mwh < sup.grid_usd_per_mwh || event_here);
      in.onsite_generation_kw = wind_kw + (gas_usable ? sup.gas_capacity_kw : 0);
      in.miners_kw = c.miners.Kw();
      in.mining_worth_it = core::MiningUsdPerMwh(hashprice, c.miners.JoulesPerTh()) >
                           status.sites[s].usd_per_mwh;
      inputs.push_back(in);
    }
    std::vector<core::SitePlan> next = flex->Tick(now_s, dt_s, inputs, active_events, plans);
    const std::string label = grid::FormatUtc(grid::UtcTime(std::chrono::seconds(now_s)));
    for (std::size_t s = 0; s < next.size(); ++s) {
      const core::SitePlan& p = next[s];
      const double prev_cap = s < plans.size() ? plans[s].gpu_cap_watts : 0;
      fleet->SetFlex(static_cast<std::uint32_t>(s), p.steer_away, p.shed_low_priority,
                     p.deferrable_paused);
      const bool was_paused = s < plans.size() && plans[s].deferrable_paused;
      if (p.deferrable_paused && !was_paused) deferrable_kw_at_pause[s] = inputs[s].deferrable_kw;
      if (!p.deferrable_paused) deferrable_kw_at_pause[s] = 0;
      if (p.gpu_cap_watts != prev_cap) {
        for (const std::uint32_t e : endpoints_of_site[s]) {
          const auto engine = engine_of_endpoint[e];
          if (engine >= 0 && engines[engine]) engines[engine]->SetPowerCapWatts(p.gpu_cap_watts);
        }
      }
      for (const auto& a : p.actions) spdlog::info("flex {}: {}", p.site, a);
      // Dispatch at the draw now: wind first, gas as far as it is cheaper or needed, the grid.
      supply[s].draw_kw = p.power_kw;
      supply[s].import_budget_kw = p.budget_kw;
      const core::SupplyPlan dispatch = core::PlanSupply(supply[s]);
      fleet::SiteGridStatus st;
      st.plan = p;
      st.plan.import_kw = dispatch.import_kw;
      st.miners_kw = p.miners_on ? inputs[s].miners_kw : 0;
      st.generation_kw = supply[s].wind_kw + dispatch.gas_kw;
      st.gas_kw = dispatch.gas_kw;
      st.marginal_source = std::string(dispatch.source);
      st.grid_usd_per_mwh = supply[s].grid_usd_per_mwh;
      st.export_kw = dispatch.export_kw;
      st.mining_usd_per_mwh =
          core::MiningUsdPerMwh(hashprice, site_configs[s].miners.JoulesPerTh());
      st.usd_per_mwh = status.sites[s].usd_per_mwh;
      grid_state->Record(p.site, std::move(st), label, dt_s);
    }
    plans = std::move(next);
  }
  void ScheduleFlex() {
    flex_timer->expires_after(std::chrono::milliseconds(250));
    flex_timer->async_wait([this](boost::system::error_code ec) {
      if (ec || stopped) return;
      FlexTick();
      ScheduleFlex();
    });
  }

  void SchedulePrices() {
    price_timer->expires_after(std::chrono::milliseconds(250));
    price_timer->async_wait([this](boost::system::error_code ec) {
      if (ec || stopped) return;
      RefreshPrices();
      SchedulePrices();
    });
  }
};

Runtime::Runtime() : parts_(std::make_unique<Parts>()) {}
Runtime::~Runtime() {
  Stop();
  // A request cut off by the stop (an engine that never answered) is a coroutine frame that the
  // gateway's pool destroys with its io_contexts; the frame's destructors give back what it
  // holds at the fleet and the tenancy, through the gateway. So the pool goes before those,
  // after what holds I/O objects on it (servers, prober, timers, the VEN).
  Parts& p = *parts_;
  p.ven.reset();
  p.prober.reset();
  p.flex_timer.reset();
  p.price_timer.reset();
  p.admin_server.reset();
  p.server.reset();
  if (p.gateway) p.gateway->JoinAdminThread();
  if (p.tenancy) p.tenancy->DrainCallbacks();  // they post to the pool's (stopped) executors.
  p.gateway_pool.reset();
}

std::expected<std::unique_ptr<Runtime>, std::string> Runtime::Start(
    const fleet::FleetConfig& config, const UpOptions& options) {
  std::unique_ptr<Runtime> rt(new Runtime());
  Parts& p = *rt->parts_;
  auto market_start = grid::ParseUtcTimestamp(
      options.market_start.empty() ? config.market_start : options.market_start);
  if (!market_start) return std::unexpected("market start: " + market_start.error());
  p.market_speed = options.market_speed > 0 ? options.market_speed : config.market_speed;
  p.shutdown_grace = options.shutdown_grace;
  p.market = std::make_unique<grid::MarketClock>(*market_start, p.market_speed, Clock::now());

  for (const auto& s : config.sites) {
    if (s.price.format.empty()) {
      p.prices.push_back(grid::PriceSeries::Constant(s.price.fixed_usd_per_mwh));
      continue;
    }
    auto format = grid::ParsePriceFormat(s.price.format);
    if (!format) return std::unexpected("site " + s.id + ": " + format.error());
    grid::PriceSource source{*format, Resolve(options.data_dir, s.price.file).string(),
                             s.price.column};
    auto series = grid::LoadPriceFeed(source);
    if (!series) return std::unexpected("site " + s.id + ": " + series.error().ToString());
    p.prices.push_back(std::move(*series));
  }

  p.site_configs = config.sites;
  for (const auto& s : config.sites) {
    if (s.wind.capacity_kw <= 0) {
      p.wind.emplace_back();
      continue;
    }
    auto profile = grid::LoadCapacityFactorCsv(Resolve(options.data_dir, s.wind.profile).string());
    if (!profile) return std::unexpected("site " + s.id + " wind: " + profile.error().ToString());
    p.wind.emplace_back(std::move(*profile));
  }
  p.grid_state = std::make_unique<fleet::GridState>(config.hashprice_usd_per_ph_day);
  core::FlexOptions flex_options;
  flex_options.cap_slew_watts_per_s = config.cap_slew_watts_per_s;
  p.flex = std::make_unique<core::FlexController>(flex_options);

  std::map<std::string, std::shared_ptr<const core::GpuModel>> gpus;
  for (const auto& s : config.sites) {
    for (const auto& g : s.endpoints) {
      if (gpus.contains(g.gpu)) continue;
      auto profile = engine::LoadGpuProfile(g.gpu, options.data_dir);
      if (!profile) return std::unexpected("site " + s.id + ": " + profile.error());
      gpus[g.gpu] = std::make_shared<const core::GpuModel>(std::move(*profile));
    }
  }

  // Emulated engines run on their own thread; the gateway on one thread per core.
  p.engine_pool = std::make_unique<net::IoPool>(1);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  p.gateway_pool = std::make_unique<net::IoPool>(options.threads > 0 ? options.threads : cores);

  std::vector<core::Site> sites;
  std::vector<std::string> models;
  std::vector<core::Endpoint> endpoints;
  std::vector<fleet::EndpointAddress> addresses;
  auto model_index = [&](const std::string& name) {
    for (std::size_t i = 0; i < models.size(); ++i) {
      if (models[i] == name) return static_cast<std::uint32_t>(i);
    }
    models.push_back(name);
    return static_cast<std::uint32_t>(models.size() - 1);
  };
  const auto loopback = net::asio::ip::make_address("127.0.0.1");
  std::uint64_t seed = 1;
  for (std::size_t si = 0; si < config.sites.size(); ++si) {
    const auto& s = config.sites[si];
    sites.push_back({s.id, s.jurisdiction, s.pue, s.network_rtt_ms / 1e3});
    int n = 0;
    for (const auto& g : s.endpoints) {
      for (int i = 0; i < g.count; ++i, ++n) {
        core::Endpoint e;
        e.id = s.id + "/" + g.gpu + "-" + std::to_string(n);
        e.site_index = static_cast<std::uint32_t>(si);
        e.model_index = model_index(g.model);
        e.gpu = gpus[g.gpu];
        e.max_batch = g.max_batch;
        e.max_queue = g.max_queue;
        e.kv_token_capacity = g.kv_tokens;
        e.hardware_usd_per_hour = g.hardware_usd_per_hour;
        fleet::EndpointAddress address;
        if (g.emulate) {
          engine::EngineOptions eo;
          eo.model = g.model;
          eo.gpu = e.gpu;
          eo.max_batch = g.max_batch;
          eo.kv_token_capacity = g.kv_tokens;
          eo.speed = options.engine_speed;
          eo.seed = seed++;
          eo.name = e.id;
          try {
            p.engines.push_back(std::make_unique<engine::Engine>(
                p.engine_pool->context(0).get_executor(), net::tcp::endpoint(loopback, 0), eo));
          } catch (const std::exception& ex) {
            return std::unexpected("emulated engine " + e.id + ": " + ex.what());
          }
          p.engine_options.push_back(eo);
          p.engine_of_endpoint.push_back(static_cast<std::int64_t>(p.engines.size() - 1));
          address = {"127.0.0.1", p.engines.back()->port()};
        } else {
          p.engine_of_endpoint.push_back(-1);
          if (!ParseEndpointUrl(g.urls[i], &address)) {
            return std::unexpected("site " + s.id + ": bad endpoint url '" + g.urls[i] +
                                   "' (want http://host:port)");
          }
        }
        endpoints.push_back(std::move(e));
        addresses.push_back(std::move(address));
      }
    }
  }
  p.fleet = std::make_unique<fleet::Fleet>(sites, models, endpoints, addresses);
  p.endpoints_of_site.resize(sites.size());
  p.supply.resize(sites.size());
  p.deferrable_kw_at_pause.resize(sites.size(), 0);
  for (std::uint32_t e = 0; e < endpoints.size(); ++e) {
    p.endpoints_of_site[endpoints[e].site_index].push_back(e);
  }
  p.RefreshPrices();

  gateway::TenantDirectory tenants;
  for (const auto& t : config.tenants) {
    tenants.Add({t.id, t.jurisdictions, t.priority, t.ttft_target_ms / 1e3, t.tpot_target_ms / 1e3},
                t.key_sha256);
  }
  // A listen address that cannot be bound is refused before the store is opened (or a new
  // SQLite store made for nothing).
  const std::pair<std::string, bool> listeners[] = {
      {options.listen.empty() ? config.listen : options.listen, options.reuse_port},
      {options.admin_listen, false}};  // (the admin listener is each process's own)
  for (const auto& [address, reuse_port] : listeners) {
    if (auto bindable = CheckBindable(address, reuse_port); !bindable) {
      return std::unexpected(bindable.error());
    }
  }
  if (!options.state_dir.empty() || !options.store_url.empty()) {
    const auto file = store::SqliteFile(options.store_url, options.state_dir);
    std::error_code exists_ec;
    const bool fresh = file && !std::filesystem::exists(*file, exists_ec);
    auto st = store::Store::Open(options.store_url, options.state_dir,
                                 store::StoreOptions{.sync_commits = options.sync_ledger});
    if (!st) return std::unexpected("store: " + st.error());
    // Which store this gateway runs on, so a mistyped --data-dir shows at once.
    if (file) {
      spdlog::info("store: SQLite {}{}", file->string(), fresh ? " (created)" : "");
    } else {
      spdlog::info("store: PostgreSQL (--store)");
    }
    // The fleet file's tenants and keys are seeded into the store, which is their source of
    // truth from then on (tenants and keys made through the admin API live beside them).
    for (const auto& t : config.tenants) {
      // A tenant the store lacks is made from the fleet file. One it has keeps what the store
      // says: a change made through the admin API or the CLI is not undone by a restart (nor,
      // on a shared store, by another gateway's start). Where the file says otherwise, a
      // warning says which stands and how to change it.
      auto existing = (*st)->GetTenant(t.id);
      if (!existing) return std::unexpected("store: " + existing.error());
      store::TenantRecord r;
      r.id = t.id;
      r.jurisdictions = t.jurisdictions;
      r.priority_class = std::string(core::ToString(t.priority));
      r.latency_target_ms = static_cast<std::int64_t>(t.ttft_target_ms);
      if (!existing->has_value()) {
        if (auto ok = (*st)->PutTenant(r); !ok) return std::unexpected("store: " + ok.error());
      } else if (const std::string differ = SeedDifference(**existing, r); !differ.empty()) {
        spdlog::warn("tenant {}: the store's {} stand, not the fleet file's (change them with "
                     "POST /admin/tenants or `powerplane tenants add`)",
                     t.id, differ);
      }
      for (std::size_t i = 0; i < t.key_sha256.size(); ++i) {
        auto ok = (*st)->AddKeyHash(t.id, t.key_sha256[i], "cfg_" + t.id + "_" + std::to_string(i));
        if (!ok) return std::unexpected("store: " + ok.error());
      }
    }
    gateway::TenancyOptions tenancy_options;
    // Ledger rows are journaled beside the state (a local file; the command line's --data-dir
    // defaults to .powerplane, so a PostgreSQL store has one too), so a request's row is durable
    // without waiting for the store's commit; with no state folder, or when rows must reach the
    // disk (--sync-ledger), each request waits for its row's group commit. The journal is opened
    // either way: rows an earlier run left there go to the store first.
    if (!options.state_dir.empty()) tenancy_options.journal_dir = options.state_dir / "ledger-journal";
    tenancy_options.wait_for_commit = options.sync_ledger;
    spdlog::info("ledger: {}", options.sync_ledger
                                   ? "each row committed and flushed to disk before its request ends"
                                   : tenancy_options.journal_dir.empty()
                                         ? "each row committed before its request ends"
                                         : "each row journaled before its request ends");
    auto tenancy = gateway::Tenancy::WithStore(std::move(*st), tenancy_options);
    if (!tenancy) return std::unexpected(tenancy.error());
    p.tenancy = std::move(*tenancy);
  } else {
    p.tenancy = std::make_shared<gateway::Tenancy>(std::move(tenants));
  }
  std::filesystem::path limits_file = options.limits_file;
  if (limits_file.empty() && options.reuse_port && !options.state_dir.empty()) {
    limits_file = options.state_dir / "rate-limits";
  }
  if (!limits_file.empty()) {
    auto table = gateway::SharedBuckets::Open(limits_file);
    if (!table) return std::unexpected(table.error());
    spdlog::info("rate limits: shared by the processes that use {}", limits_file.string());
    p.tenancy->ShareRateLimits(std::move(*table));
  } else if (options.reuse_port && p.tenancy->has_store()) {
    // (Without a store there are no per-minute limits to share: the fleet file sets none.)
    spdlog::warn("rate limits: this process keeps its own (no --data-dir, no --limits-file)");
  }
  gateway::GatewayOptions go;
  go.admin_key_sha256 = config.admin_key_sha256;
  go.default_output_tokens = config.default_output_tokens;
  // Emulators slowed below real time answer slower than the GPU model predicts, by design.
  go.latency_breaker = config.latency_breaker && options.engine_speed >= 1.0;
  go.admin_on_separate_listener = !options.admin_listen.empty();
  go.upstream_response_timeout = std::chrono::seconds(options.upstream_timeout_s);
  go.stream_head_timeout = options.stream_head_timeout;
  go.grid = p.grid_state.get();
  go.market_time = [market = p.market.get()] {
    return grid::FormatUtc(market->MarketTime(Clock::now()));
  };
  p.gateway = std::make_unique<gateway::Gateway>(*p.fleet, p.tenancy, go);
  p.demo_keys = config.admin_key_sha256 == fleet::Sha256Hex("pp-admin-key");

  const std::string listen = options.listen.empty() ? config.listen : options.listen;
  const std::size_t max_connections = ConnectionBound(options.max_connections);
  auto server = Listen(listen, p.gateway_pool->Executors(), p.gateway->handler(), options,
                       max_connections, options.reuse_port, &p.host);
  if (!server) return std::unexpected(server.error());
  p.server = std::move(*server);
  if (!options.admin_listen.empty()) {
    // Never shared (no --reuse-port here): each process answers its own admin address, so its
    // /metrics can be scraped on its own.
    auto admin = Listen(options.admin_listen, p.gateway_pool->Executors(),
                        p.gateway->admin_handler(), options, max_connections,
                        /*reuse_port=*/false);
    if (!admin) return std::unexpected(admin.error());
    p.admin_server = std::move(*admin);
  }

  for (auto& e : p.engines) e->Start();
  p.engine_pool->Start();
  p.prober = std::make_unique<fleet::Prober>(*p.fleet, p.gateway_pool->context(0).get_executor());
  p.prober->Start();
  p.server->Start();
  if (p.admin_server) p.admin_server->Start();
  p.price_timer =
      std::make_unique<net::asio::steady_timer>(p.gateway_pool->context(0).get_executor());
  p.SchedulePrices();
  p.flex_timer =
      std::make_unique<net::asio::steady_timer>(p.gateway_pool->context(0).get_executor());
  p.FlexTick();
  p.ScheduleFlex();
  // OpenADR 3: the VTN's events replace the "openadr" set of grid events; USAGE reports carry
  // each site's measured import.
  const std::string vtn = options.openadr_vtn.empty() ? config.openadr_vtn : options.openadr_vtn;
  if (!vtn.empty()) {
    openadr::VenOptions vo;
    vo.vtn_url = vtn;
    vo.client_id = options.openadr_client_id.empty() ? config.openadr_client_id
                                                     : options.openadr_client_id;
    vo.client_secret = options.openadr_client_secret.empty() ? config.openadr_client_secret
                                                             : options.openadr_client_secret;
    vo.poll_interval = std::chrono::milliseconds(config.openadr_poll_interval_ms);
    fleet::GridState* grid_state = p.grid_state.get();
    auto ven = openadr::Ven::Create(
        p.gateway_pool->context(0).get_executor(), vo,
        [grid_state](std::vector<core::GridEvent> events) {
          spdlog::info("openadr: {} grid event(s) from the VTN", events.size());
          grid_state->ReplaceEvents("openadr", std::move(events));
        },
        [grid_state](const std::string& site) -> std::optional<double> {
          auto s = grid_state->Status(site);
          if (!s) return std::nullopt;
          return s->plan.import_kw;
        });
    if (!ven) return std::unexpected("openadr: " + ven.error());
    p.ven = std::move(*ven);
    p.ven->Start();
  }
  if (p.tenancy->has_store()) {
    p.tenancy_poller = std::thread([&p] {
      std::unique_lock lock(p.poll_mu);
      while (!p.stopped) {
        lock.unlock();
        p.tenancy->Poll();
        lock.lock();
        p.poll_wake.wait_for(lock, std::chrono::milliseconds(250), [&p] { return p.stopped.load(); });
      }
    });
  }
  p.gateway_pool->Start();
  return rt;
}

void Runtime::Stop() {
  Parts& p = *parts_;
  std::lock_guard stopping(p.stop_mu);
  if (p.stop_began) return;
  p.stop_began = true;
  p.Drain();
  p.stopped = true;
  if (p.gateway_pool && p.price_timer) {
    net::asio::post(p.gateway_pool->context(0), [&p] {
      p.price_timer->cancel();
      if (p.flex_timer) p.flex_timer->cancel();
    });
  }
  if (p.ven) p.ven->Stop();
  if (p.prober) p.prober->Stop();
  if (p.server) p.server->Stop();
  if (p.admin_server) p.admin_server->Stop();
  for (auto& e : p.engines) {
    if (e) e->Stop();
  }
  if (p.gateway_pool) p.gateway_pool->Stop();
  if (p.engine_pool) p.engine_pool->Stop();
  {
    std::lock_guard lock(p.poll_mu);
  }
  p.poll_wake.notify_all();
  if (p.tenancy_poller.joinable()) p.tenancy_poller.join();
}

void Runtime::Hurry() { parts_->hurry = true; }

unsigned short Runtime::port() const { return parts_->server->port(); }
unsigned short Runtime::admin_port() const {
  return parts_->admin_server ? parts_->admin_server->port() : 0;
}
std::string Runtime::host() const { return parts_->host; }
fleet::Fleet& Runtime::fleet() { return *parts_->fleet; }
fleet::GridState& Runtime::grid() { return *parts_->grid_state; }
gateway::Tenancy& Runtime::tenancy() { return *parts_->tenancy; }
std::size_t Runtime::emulated_engines() const { return parts_->engines.size(); }

void Runtime::StopEngine(std::size_t endpoint) {
  const auto i = parts_->engine_of_endpoint.at(endpoint);
  if (i < 0 || !parts_->engines[i]) return;
  parts_->engines[i]->Stop();
  // Destroy it on its own thread, after the stop has run there.
  std::promise<void> done;
  net::asio::post(parts_->engine_pool->context(0), [&] {
    parts_->engines[i].reset();
    done.set_value();
  });
  done.get_future().wait();
}

void Runtime::RestartEngine(std::size_t endpoint) {
  const auto i = parts_->engine_of_endpoint.at(endpoint);
  if (i < 0 || parts_->engines[i]) return;
  const auto& a = parts_->fleet->address(endpoint);
  std::promise<void> done;
  net::asio::post(parts_->engine_pool->context(0), [&] {
    parts_->engines[i] = std::make_unique<engine::Engine>(
        parts_->engine_pool->context(0).get_executor(),
        net::tcp::endpoint(net::asio::ip::make_address(a.host), a.port), parts_->engine_options[i]);
    parts_->engines[i]->Start();
    done.set_value();
  });
  done.get_future().wait();
}

std::string Runtime::Banner() const {
  const Parts& p = *parts_;
  const std::string scheme = p.server->tls() ? "https://" : "http://";
  const std::string base = scheme + p.host + ":" + std::to_string(port());
  std::string out = "powerplane is up: " + std::to_string(p.fleet->site_count()) + " sites, " +
                    std::to_string(p.fleet->endpoint_count()) + " endpoints (" +
                    std::to_string(p.engines.size()) + " emulated), market " +
                    grid::FormatUtc(p.market->MarketTime(Clock::now())) + " at " +
                    std::to_string(static_cast<int>(p.market_speed)) + "x\n";
  out += "  API:     " + base + "/v1   (OpenAI-compatible)\n";
  const std::string admin_base =
      p.admin_server ? scheme + p.host + ":" + std::to_string(p.admin_server->port()) : base;
  out += "  metrics: " + base + "/metrics   admin: " + admin_base + "/admin/fleet\n";
  // The demo's keys this gateway accepts: a fleet file may define either tenant key or neither
  // (the admin key is the fleet file's own, known by its hash).
  std::string demo_keys;
  bool demo_key = false;
  for (const std::string_view key : {"pp-demo-key", "pp-eu-key"}) {
    const auto tenant = p.tenancy->Identify(key).tenant;
    if (!tenant) continue;
    demo_key = demo_key || key == "pp-demo-key";
    std::string where;
    for (const auto& j : tenant->jurisdictions) where += (where.empty() ? "" : ", ") + j;
    demo_keys += std::string(demo_keys.empty() ? "" : ", ") + std::string(key) + " (" +
                 (where.empty() ? "any jurisdiction" : where + " only") + ")";
  }
  if (p.demo_keys) demo_keys += (demo_keys.empty() ? "" : ", ") + std::string("admin pp-admin-key");
  if (!demo_keys.empty()) out += "  demo keys (demo only): " + demo_keys + "\n";
  const std::string model = p.fleet->models().empty() ? "" : p.fleet->models()[0];
  out += "  try: curl -N " + base + "/v1/chat/completions -H 'Authorization: Bearer " +
         (demo_key ? "pp-demo-key" : "<key>") +
         "' -H 'Content-Type: application/json' -d '{\"model\":\"" + model +
         "\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\n";
  return out;
}

int RunUntilSignal(const fleet::FleetConfig& config, const UpOptions& options) {
  auto rt = Runtime::Start(config, options);
  if (!rt) {
    spdlog::error("{}", rt.error());
    return 2;
  }
  std::fputs((*rt)->Banner().c_str(), stdout);
  std::fflush(stdout);
  net::asio::io_context main_context(1);
  net::asio::signal_set signals(main_context, SIGINT, SIGTERM);
  signals.async_wait([](boost::system::error_code, int sig) {
    spdlog::info("signal {}: stopping", sig);
  });
  main_context.run();
  // A second signal while the requests under way finish cuts them.
  Runtime& runtime = **rt;
  signals.async_wait([&runtime, &signals](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: stopping now (signal again to exit at once)", sig);
    runtime.Hurry();
    // A third: out at once (each request's ledger row is journaled before it ends).
    signals.async_wait([](boost::system::error_code ec3, int sig3) {
      if (ec3) return;
      spdlog::warn("signal {}: exiting now", sig3);
      spdlog::shutdown();
      std::_Exit(128 + sig3);
    });
  });
  main_context.restart();
  std::thread second_signal([&main_context] { main_context.run(); });
  runtime.Stop();
  signals.cancel();
  second_signal.join();
  rt->reset();  // the ledger writer flushes its last rows here.
  spdlog::info("stopped");
  return 0;
}

}  // namespace powerplane::runtime
