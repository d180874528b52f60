// Fuzzes the admin API's parsers (gateway/admin_parse.h) with the same bytes as each of: a
// tenant body, a grid event body, a hashprice body, a site price body and a request target's
// query. What they accept must hold what they promise: a tenant the store would take, an event
// within its bounds (so its arithmetic cannot overflow), finite prices.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "gateway/admin_parse.h"
#include "grid/time.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace powerplane;
  using namespace powerplane::gateway;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  if (const auto t = TenantFromJson(bytes)) {
    if (store::TenantError(*t)) __builtin_trap();
    if (t->latency_target_ms > kMaxLatencyTargetMs || t->rpm > kMaxPerMinute ||
        t->tpm > kMaxPerMinute) {
      __builtin_trap();
    }
    // What the API shows of it (and audits) reads back as the same tenant.
    if (!TenantFromJson(TenantToJson(*t))) __builtin_trap();
  }

  constexpr std::int64_t kNow = 1'790'000'000;
  const auto event = GridEventFromJson(
      bytes, [](std::string_view site) { return site == "west-texas"; }, kNow);
  if (event) {
    if (event->site != "west-texas") __builtin_trap();
    if (!std::isfinite(event->target_kw) || event->target_kw < 0) __builtin_trap();
    if (event->start_s < 0 || event->start_s > kMaxEpochSeconds) __builtin_trap();
    if (event->duration_s < 0 || event->duration_s > kMaxEventSeconds || event->ramp_s < 0 ||
        event->ramp_s > kMaxEventSeconds) {
      __builtin_trap();
    }
    // What the grid side and the admin listing then do with it (UBSan checks the arithmetic).
    (void)event->ActiveAt(kNow);
    (void)event->BindingAt(kNow);
    (void)grid::FormatUtc(grid::UtcTime(std::chrono::seconds(event->start_s)));
  }

  if (const auto hashprice = HashpriceFromJson(bytes)) {
    if (!std::isfinite(*hashprice) || *hashprice < 0) __builtin_trap();
  }

  if (const auto price = SitePriceFromJson(bytes)) {
    if (!std::isfinite(*price) || *price < -10000 || *price > 100000) __builtin_trap();
  }

  for (const std::string_view name : {"tenant", "group_by", "format"}) {
    // Decoding only shrinks: an escape of three bytes is one, any other byte is itself.
    if (const auto value = QueryParam(bytes, name); value && value->size() > bytes.size()) {
      __builtin_trap();
    }
  }
  for (const std::string_view name : {"from", "to"}) {
    (void)TimeParam(bytes, name, 0);
  }
  return 0;
}
