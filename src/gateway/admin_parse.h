#pragma once
// What the admin API reads from its callers, parsed with no I/O: query parameters, time bounds,
// tenant, grid event, hashprice and site price bodies. Untrusted bytes (whoever holds the admin
// key, or whatever stands in front of the admin listener): nothing here throws, and every number
// is checked to fit what it becomes before it is converted, so a body cannot overflow an integer
// or put an infinity into the books. An error names the field. Fuzzed by
// fuzz/admin_body_fuzz.cc.

#include <cstdint>
#include <expected>
#include <functional>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/grid_event.h"
#include "store/records.h"

namespace powerplane::gateway {

// Bounds on what a body may ask for; beyond them the request is refused, not clamped.
// A tenant's latency target: a day. Its rpm and tpm: 10^12.
inline constexpr std::int64_t kMaxLatencyTargetMs = 24LL * 3600 * 1000;
inline constexpr std::int64_t kMaxPerMinute = 1'000'000'000'000LL;
// A grid event's duration and ramp: ten years of 366 days. Its start: 9999-12-31T23:59:59Z.
inline constexpr std::int64_t kMaxEventSeconds = 10LL * 366 * 24 * 3600;
inline constexpr std::int64_t kMaxEpochSeconds = 253'402'300'799LL;

// A query parameter's value ("" when absent), decoded as an HTML form encodes it
// (application/x-www-form-urlencoded): "%XX" is the byte XX, its hex digits in either case, and
// '+' is a space (so a '+' of a time zone offset comes as %2B). A '%' not followed by two hex
// digits, or an escaped control character (%00 to %1F, %7F), is an error naming the parameter.
// The first of repeated parameters is taken.
std::expected<std::string, std::string> QueryParam(std::string_view target, std::string_view name);

// Why `target` is refused when a query parameter's name is not in `known` ("unknown query
// parameter 'tennant' (it takes from, to, tenant)"); nullopt when every one is known. A
// misspelt filter would otherwise be ignored, and the answer would cover everything.
std::optional<std::string> UnknownQueryParam(std::string_view target,
                                             std::span<const std::string_view> known);

// A time bound from the query (decoded as QueryParam does): Unix milliseconds or an ISO 8601
// timestamp; `fallback` when absent. A number from 1 to kMinUnixMs - 1 is refused: it is
// almost surely Unix seconds (which would be read as a time in 1970 or 1971).
inline constexpr std::int64_t kMinUnixMs = 63'072'000'000;  // 1972-01-01T00:00:00Z.
std::expected<std::int64_t, std::string> TimeParam(std::string_view target, std::string_view name,
                                                   std::int64_t fallback);

// A tenant from `POST /admin/tenants`, checked as the store would check it (store::TenantError):
// {"id", "jurisdictions", "class", "latency_target_ms", "rpm", "tpm", "budget_usd",
// "budget_period"}; any other field is refused by name (a misspelt limit is not dropped). A
// field the body leaves out is `base`'s (the stored tenant of that id, so a body changes only
// what it names), or the default when `base` is null (a new tenant).
std::expected<store::TenantRecord, std::string> TenantFromJson(
    std::string_view body, const store::TenantRecord* base = nullptr);

// An audit row's detail as a JSON object of the given string fields, in their order
// ({"id":"key_1","tenant":"acme"}): every action's detail is one JSON object.
std::string AuditDetail(std::initializer_list<std::pair<std::string_view, std::string_view>> fields);

// A tenant as the admin API shows it (GET and POST /admin/tenants) and as the audit log records
// its `tenant.put` (admin API and CLI alike): a JSON object of the fields TenantFromJson reads.
std::string TenantToJson(const store::TenantRecord& tenant);

// A grid event from `POST /admin/grid-events`: {"site", "target_kw", "start" (ISO 8601 or epoch
// seconds; `now_s` when absent), "duration_s", "ramp_s", "id"}. `site_known` says whether the
// fleet has the site.
std::expected<core::GridEvent, std::string> GridEventFromJson(
    std::string_view body, const std::function<bool(std::string_view)>& site_known,
    std::int64_t now_s);

// The hashprice from `POST /admin/hashprice`: {"usd_per_ph_day": a finite number >= 0}.
std::expected<double, std::string> HashpriceFromJson(std::string_view body);

// A site's price override from `POST /admin/sites/{id}/price`: {"usd_per_mwh": a number from
// -10000 to 100000}.
std::expected<double, std::string> SitePriceFromJson(std::string_view body);

}  // namespace powerplane::gateway
