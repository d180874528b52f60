// Store::Open, validation and the row conversions both backends share.

#include "store/store.h"

#include <charconv>
#include <system_error>

#include "store/sql_store.h"

namespace powerplane::store {

Result<double> Store::ChargedUsd(std::string_view tenant, std::int64_t since_ms) {
  const std::string one[] = {std::string(tenant)};
  auto sums = ChargedUsd(std::span<const std::string>(one), since_ms);
  if (!sums) return std::unexpected(sums.error());
  return sums->front();
}

std::optional<UsageGroup> ParseUsageGroup(std::string_view name) {
  if (name == "site") return UsageGroup::kSite;
  if (name == "model") return UsageGroup::kModel;
  if (name == "day") return UsageGroup::kDay;
  if (name == "tenant") return UsageGroup::kTenant;
  return std::nullopt;
}

namespace {

constexpr int kSqliteBusyTimeoutMs = 10000;

// The query of a SQLite store URL: "busy_timeout_ms=N" (0 to 600000), nothing else.
Result<int> SqliteBusyTimeout(std::string_view query) {
  constexpr std::string_view kName = "busy_timeout_ms=";
  int ms = -1;
  if (query.starts_with(kName)) {
    const std::string_view value = query.substr(kName.size());
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
    if (ec != std::errc() || end != value.data() + value.size()) ms = -1;
  }
  if (ms < 0 || ms > 600000) {
    return std::unexpected("a SQLite store URL takes only ?busy_timeout_ms=N (0 to 600000), not '?" +
                           std::string(query) + "'");
  }
  return ms;
}

}  // namespace

std::optional<std::filesystem::path> SqliteFile(std::string_view url,
                                               const std::filesystem::path& data_dir) {
  if (!url.empty() && !url.starts_with("sqlite:")) return std::nullopt;
  std::string_view rest = url.empty() ? url : url.substr(7);
  rest = rest.substr(0, rest.find('?'));
  return rest.empty() ? data_dir / "powerplane.db" : std::filesystem::path(rest);
}

Result<std::unique_ptr<Store>> Store::Open(std::string_view url,
                                           const std::filesystem::path& data_dir,
                                           StoreOptions options) {
  std::unique_ptr<internal::Connection> connection;
  std::string origin;
  try {
    if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
      origin = "postgresql";
      connection = internal::OpenPostgres(std::string(url));
    } else if (url.empty() || url.starts_with("sqlite:")) {
      std::string_view rest = url.empty() ? url : url.substr(7);
      int busy_timeout_ms = kSqliteBusyTimeoutMs;
      if (const auto q = rest.find('?'); q != std::string_view::npos) {
        auto timeout = SqliteBusyTimeout(rest.substr(q + 1));
        if (!timeout) return std::unexpected(timeout.error());
        busy_timeout_ms = *timeout;
      }
      const std::filesystem::path path = *SqliteFile(url, data_dir);
      if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
      origin = "sqlite " + path.string();
      connection = internal::OpenSqlite(path.string(), busy_timeout_ms, options.sync_commits);
    } else {
      return std::unexpected(
          "store URL must be empty, sqlite:[PATH][?busy_timeout_ms=N], postgresql://... or "
          "postgres://..., not '" +
          std::string(url) + "'");
    }
  } catch (const std::exception& e) {
    return std::unexpected(std::string("cannot open store: ") + e.what());
  }
  auto store = internal::SqlStore::Create(std::move(connection), origin);
  if (!store) return std::unexpected(store.error());
  return std::unique_ptr<Store>(std::move(*store));
}

namespace internal {
namespace {

template <typename T>
T Parse(const std::string& text) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    throw SqlError("not a number: '" + text + "'");
  }
  return value;
}

}  // namespace

std::int64_t Row::Int(std::size_t i) const {
  const Cell& c = cells_.at(i);
  if (const auto* v = std::get_if<std::int64_t>(&c)) return *v;
  if (const auto* d = std::get_if<double>(&c)) return static_cast<std::int64_t>(*d);
  if (const auto* s = std::get_if<std::string>(&c)) return Parse<std::int64_t>(*s);
  return 0;
}

double Row::Double(std::size_t i) const {
  const Cell& c = cells_.at(i);
  if (const auto* d = std::get_if<double>(&c)) return *d;
  if (const auto* v = std::get_if<std::int64_t>(&c)) return static_cast<double>(*v);
  if (const auto* s = std::get_if<std::string>(&c)) return Parse<double>(*s);
  return 0;
}

std::string Row::Text(std::size_t i) const {
  const Cell& c = cells_.at(i);
  if (const auto* s = std::get_if<std::string>(&c)) return *s;
  if (const auto* v = std::get_if<std::int64_t>(&c)) return std::to_string(*v);
  if (const auto* d = std::get_if<double>(&c)) return std::to_string(*d);
  return {};
}

void AppendLedgerParams(const LedgerRow& r, std::vector<Param>& out) {
  out.emplace_back(r.request_id);
  out.emplace_back(r.tenant);
  out.emplace_back(r.key_id);
  out.emplace_back(r.model);
  out.emplace_back(r.site);
  out.emplace_back(r.endpoint);
  out.emplace_back(r.priority_class);
  out.emplace_back(r.prompt_tokens);
  out.emplace_back(r.completion_tokens);
  out.emplace_back(r.start_unix_ms);
  out.emplace_back(r.end_unix_ms);
  out.emplace_back(r.ttft_ms);
  out.emplace_back(r.joules);
  out.emplace_back(r.usd_per_mwh);
  out.emplace_back(r.energy_cost_usd);
  out.emplace_back(r.charged_usd);
  out.emplace_back(r.outcome);
}

LedgerRow LedgerRowFrom(const Row& r) {
  return LedgerRow{.request_id = r.Text(0),
                   .tenant = r.Text(1),
                   .key_id = r.Text(2),
                   .model = r.Text(3),
                   .site = r.Text(4),
                   .endpoint = r.Text(5),
                   .priority_class = r.Text(6),
                   .prompt_tokens = r.Int(7),
                   .completion_tokens = r.Int(8),
                   .start_unix_ms = r.Int(9),
                   .end_unix_ms = r.Int(10),
                   .ttft_ms = r.Double(11),
                   .joules = r.Double(12),
                   .usd_per_mwh = r.Double(13),
                   .energy_cost_usd = r.Double(14),
                   .charged_usd = r.Double(15),
                   .outcome = r.Text(16)};
}

}  // namespace internal
}  // namespace powerplane::store
