#include "gateway/metrics.h"

#include <prometheus/text_serializer.h>

namespace powerplane::gateway {
namespace {

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  return kBuckets;
}

}  // namespace

GatewayMetrics::GatewayMetrics(const fleet::Fleet& fleet, const fleet::GridState* grid)
    : fleet_(fleet),
      grid_(grid),
      registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("powerplane_requests_total")
                    .Help("API requests by site and HTTP status (499: the client left first, as "
                          "nginx counts it; 502 also for a stream that broke after its head)")
                    .Register(*registry_)),
      tokens_(prometheus::BuildCounter()
                  .Name("powerplane_tokens_total")
                  .Help("Tokens of requests that reached an engine, as charged (a cancelled or "
                        "broken stream's delivered tokens included), by site and kind")
                  .Register(*registry_)),
      decisions_(prometheus::BuildCounter()
                     .Name("powerplane_route_decisions_total")
                     .Help("Routing decisions by outcome")
                     .Register(*registry_)),
      energy_joules_(prometheus::BuildCounter()
                         .Name("powerplane_energy_joules_total")
                         .Help("Estimated GPU energy of requests that reached an engine "
                               "(facility: x PUE)")
                         .Register(*registry_)),
      energy_cost_(prometheus::BuildCounter()
                       .Name("powerplane_energy_cost_usd_total")
                       .Help("Estimated energy cost of requests that reached an engine, PUE "
                             "included")
                       .Register(*registry_)),
      ttft_(prometheus::BuildHistogram()
                .Name("powerplane_time_to_first_token_seconds")
                .Help("Time to first token seen by the gateway")
                .Register(*registry_)),
      duration_(prometheus::BuildHistogram()
                    .Name("powerplane_request_duration_seconds")
                    .Help("Request duration seen by the gateway")
                    .Register(*registry_)),
      price_(prometheus::BuildGauge()
                 .Name("powerplane_site_price_usd_per_mwh")
                 .Help("Effective energy price of each site now")
                 .Register(*registry_)),
      power_(prometheus::BuildGauge()
                 .Name("powerplane_site_power_watts")
                 .Help("Facility power of each site in W: GPUs x PUE, plus base load and miners")
                 .Register(*registry_)),
      in_flight_(prometheus::BuildGauge()
                     .Name("powerplane_site_requests_in_flight")
                     .Help("Requests in flight through this gateway per site")
                     .Register(*registry_)),
      healthy_(prometheus::BuildGauge()
                   .Name("powerplane_site_healthy_endpoints")
                   .Help("Healthy endpoints per site")
                   .Register(*registry_)),
      budget_(prometheus::BuildGauge()
                  .Name("powerplane_site_budget_kw")
                  .Help("The most a site may import now (connection, operator cap, grid event)")
                  .Register(*registry_)),
      miners_(prometheus::BuildGauge()
                  .Name("powerplane_site_miners_kw")
                  .Help("Power drawn by a site's miners now")
                  .Register(*registry_)),
      export_(prometheus::BuildGauge()
                  .Name("powerplane_site_export_kw")
                  .Help("On-site generation exported now")
                  .Register(*registry_)),
      import_(prometheus::BuildGauge()
                  .Name("powerplane_site_import_kw")
                  .Help("Grid import of a site now (facility draw minus on-site generation)")
                  .Register(*registry_)),
      events_received_(prometheus::BuildCounter()
                           .Name("powerplane_grid_events_received_total")
                           .Help("Grid events received (admin API and OpenADR)")
                           .Register(*registry_)),
      flex_actions_(prometheus::BuildCounter()
                        .Name("powerplane_flex_actions_total")
                        .Help("Actions the FlexController took per site")
                        .Register(*registry_)),
      above_target_(prometheus::BuildCounter()
                        .Name("powerplane_site_seconds_above_target_total")
                        .Help("Seconds a site spent above an active grid event's target")
                        .Register(*registry_)) {
  rate_limit_peers_ = &prometheus::BuildGauge()
                           .Name("powerplane_rate_limit_peers")
                           .Help("Other gateways sharing the store whose use of tenants' "
                                 "per-minute limits this one counts")
                           .Register(*registry_)
                           .Add({});
  placed_ = &decisions_.Add({{"outcome", "placed"}});
  placed_missing_ = &decisions_.Add({{"outcome", "placed_missing_targets"}});
  for (std::uint32_t s = 0; s < fleet.site_count(); ++s) {
    const std::string& id = fleet.site(s).id;
    ok_by_site_.push_back(&requests_.Add({{"site", id}, {"code", "200"}}));
    prompt_tokens_by_site_.push_back(&tokens_.Add({{"site", id}, {"kind", "prompt"}}));
    completion_tokens_by_site_.push_back(&tokens_.Add({{"site", id}, {"kind", "completion"}}));
    joules_by_site_.push_back(&energy_joules_.Add({{"site", id}}));
    cost_by_site_.push_back(&energy_cost_.Add({{"site", id}}));
    ttft_by_site_.push_back(&ttft_.Add({{"site", id}}, LatencyBuckets()));
    duration_by_site_.push_back(&duration_.Add({{"site", id}}, LatencyBuckets()));
  }
}

void GatewayMetrics::RecordRequest(const std::string& site, int status) {
  requests_.Add({{"site", site.empty() ? "none" : site}, {"code", std::to_string(status)}})
      .Increment();
}

void GatewayMetrics::RecordTimes(std::uint32_t site, double ttft_s, double duration_s) {
  if (ttft_s >= 0) ttft_by_site_[site]->Observe(ttft_s);
  duration_by_site_[site]->Observe(duration_s);
}

void GatewayMetrics::RecordServed(std::uint32_t site, std::int64_t prompt_tokens,
                                  std::int64_t completion_tokens, double joules,
                                  double energy_cost_usd) {
  prompt_tokens_by_site_[site]->Increment(static_cast<double>(prompt_tokens));
  completion_tokens_by_site_[site]->Increment(static_cast<double>(completion_tokens));
  if (joules > 0) joules_by_site_[site]->Increment(joules);
  // Prometheus counters only go up; negative prices (paid to consume) are not subtracted here.
  if (energy_cost_usd > 0) cost_by_site_[site]->Increment(energy_cost_usd);
}

void GatewayMetrics::RecordDecision(std::string_view outcome) {
  decisions_.Add({{"outcome", std::string(outcome)}}).Increment();
}

std::string GatewayMetrics::Serialize() {
  const fleet::FleetStatus status = fleet_.Status();
  for (const auto& s : status.sites) {
    price_.Add({{"site", s.id}}).Set(s.usd_per_mwh);
    power_.Add({{"site", s.id}}).Set(s.facility_watts);
    in_flight_.Add({{"site", s.id}}).Set(s.in_flight);
    healthy_.Add({{"site", s.id}}).Set(s.healthy_endpoints);
  }
  if (grid_) {
    std::lock_guard lock(serialize_mu_);
    const double received = static_cast<double>(grid_->events_received());
    events_received_.Add({}).Increment(received - events_seen_);
    events_seen_ = received;
    for (const auto& s : status.sites) {
      auto g = grid_->Status(s.id);
      if (!g) continue;
      budget_.Add({{"site", s.id}}).Set(g->plan.budget_kw < 1e8 ? g->plan.budget_kw : -1);
      miners_.Add({{"site", s.id}}).Set(g->miners_kw);
      export_.Add({{"site", s.id}}).Set(g->export_kw);
      import_.Add({{"site", s.id}}).Set(g->plan.import_kw);
      power_.Add({{"site", s.id}}).Set(g->plan.power_kw * 1e3);
      const double actions = static_cast<double>(g->actions_taken);
      flex_actions_.Add({{"site", s.id}}).Increment(actions - actions_seen_[s.id]);
      actions_seen_[s.id] = actions;
      above_target_.Add({{"site", s.id}})
          .Increment(g->seconds_above_target - above_seen_[s.id]);
      above_seen_[s.id] = g->seconds_above_target;
    }
  }
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace powerplane::gateway
