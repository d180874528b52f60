#include "gateway/tenancy.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_set>

#include "store/keys.h"

namespace powerplane::gateway {

std::int64_t UnixMsNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {
// A lease is trusted for kLeaseTrust after the store last heard from this gateway (a store outage
// of up to kLeaseTrust is served from the leases held (kLeaseSilentMs: tenancy.h).
constexpr auto kLeaseTrust = std::chrono::seconds(30);
// How long a lease the store said is wanted keeps what it frees from the requests here: a
// little past the next refresh, which renews it while others still wait.
constexpr std::int64_t kWantedHoldMs = 1500;

double NowS() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
int RetryAfter(double wait_s) {
  if (!std::isfinite(wait_s)) return 60;
  return std::max(1, static_cast<int>(std::ceil(wait_s)));
}
}  // namespace

Tenant TenantFromRecord(const store::TenantRecord& r) {
  Tenant t;
  t.id = r.id;
  t.jurisdictions = r.jurisdictions;
  core::ParsePriorityClass(r.priority_class, &t.priority);
  if (r.latency_target_ms > 0) t.ttft_target_s = r.latency_target_ms / 1e3;
  t.rpm = r.rpm;
  t.tpm = r.tpm;
  t.budget_usd = r.budget_usd;
  core::ParseBudgetPeriod(r.budget_period, &t.budget_period);
  return t;
}

Tenancy::Tenancy(TenantDirectory config_tenants)
    : directory_(std::make_shared<const TenantDirectory>(std::move(config_tenants))) {}

std::expected<std::unique_ptr<Tenancy>, std::string> Tenancy::WithStore(
    std::unique_ptr<store::Store> store, TenancyOptions options) {
  std::unique_ptr<Tenancy> t(new Tenancy());
  Tenancy* self = t.get();
  auto writer = store::LedgerWriter::Start(
      *store, options.ledger_capacity, std::chrono::milliseconds(2), options.journal_dir,
      [self](std::span<const store::LedgerRow> rows) { self->LedgerWritten(rows); });
  if (!writer) return std::unexpected("ledger: " + writer.error());
  t->ledger_ = std::move(*writer);
  t->wait_for_commit_ = options.wait_for_commit;
  t->store_ = std::move(store);
  if (auto r = t->Reload(); !r) return std::unexpected(r.error());
  // This process's name among the gateways of the store: its journal's, which the next writer
  // of the journal finds, and with it the leases this one held.
  if (const store::LedgerJournal* journal = t->ledger_->journal()) {
    t->member_ = journal->member();
    // Writers gone whose rows the journal just replayed: their leases can go, their spend is in
    // the ledger now.
    for (const auto& gone : journal->earlier_members()) {
      if (auto r = t->store_->RetireBudgetMember(gone); !r) {
        spdlog::warn("tenancy: budget leases of {} not retired: {}", gone, r.error());
      } else {
        spdlog::info("tenancy: budget leases of {}, the journal's last writer, retired", gone);
      }
    }
  } else {
    auto member = store::RandomHex(8);
    if (!member) return std::unexpected("tenancy: " + member.error());
    t->member_ = *member;
  }
  spdlog::info("tenancy: this gateway is {} among the gateways of the store", t->member_);
  t->fleet_usage_ = std::make_unique<core::FleetUsage>(t->member_, t->member_, UnixMsNow());
  t->audit_worker_ = std::make_unique<boost::asio::thread_pool>(1);
  t->lease_worker_ = std::make_unique<boost::asio::thread_pool>(1);
  t->key_worker_ = std::make_unique<boost::asio::thread_pool>(1);
  return t;
}

Tenancy::~Tenancy() {
  // join() without stop(): the work posted so far runs first (what was asked is answered).
  if (key_worker_) key_worker_->join();
  if (lease_worker_) lease_worker_->join();
  // Every row written first: what the leases then say was settled is all in the store.
  if (ledger_) ledger_->Stop();
  if (store_) {
    // Gives back every lease's unused part at once.
    std::lock_guard leases(lease_mu_);
    lease_unreachable_ = false;
    RefreshLeases(/*release=*/true);
  }
  if (audit_worker_) audit_worker_->join();
}

std::shared_ptr<const TenantDirectory> Tenancy::directory() const {
  std::lock_guard lock(directory_mu_);
  return directory_;
}

Identity Tenancy::Identify(std::string_view api_key) const {
  // Hashed on every request (about 80 ns): no accepted key is kept in memory as it was sent.
  return directory()->Authenticate(api_key);
}

void Tenancy::IdentifyAfterLook(std::string api_key, std::function<void(Identity)> done) {
  if (!store_) {
    done(Identify(api_key));
    return;
  }
  std::lock_guard lock(key_look_mu_);
  key_lookers_.emplace_back(std::move(api_key), std::move(done));
  if (key_look_queued_) return;  // the next look takes it.
  key_look_queued_ = true;
  boost::asio::post(*key_worker_, [this] { LookForKeys(); });
}

void Tenancy::LookForKeys() {
  std::vector<std::pair<std::string, std::function<void(Identity)>>> lookers;
  {
    std::lock_guard lock(key_look_mu_);
    lookers.swap(key_lookers_);
  }
  // Every key here came before this read of the store's version: a key committed before its
  // request arrived is found.
  if (KnownVersionIsOld()) {
    if (auto r = Reload(); !r) spdlog::debug("tenancy: looking for a key: {}", r.error());
  }
  for (auto& [key, done] : lookers) done(Identify(key));
  std::lock_guard lock(key_look_mu_);
  if (key_lookers_.empty()) {
    key_look_queued_ = false;
  } else {
    boost::asio::post(*key_worker_, [this] { LookForKeys(); });
  }
}

bool Tenancy::KnownVersionIsOld() const {
  if (!store_) return false;
  const auto version = store_->Version();
  std::lock_guard lock(directory_mu_);
  return version && *version != version_;
}

std::expected<void, std::string> Tenancy::Reload() {
  if (!store_) return {};
  auto version = store_->Version();
  if (!version) return std::unexpected("store: " + version.error());
  auto tenants = store_->Tenants();
  if (!tenants) return std::unexpected("store: " + tenants.error());
  auto keys = store_->Keys();
  if (!keys) return std::unexpected("store: " + keys.error());
  auto dir = std::make_shared<TenantDirectory>();
  std::unordered_map<std::string, std::shared_ptr<const Tenant>> by_id;
  for (const auto& r : *tenants) {
    Tenant t = TenantFromRecord(r);
    t.version = *version;
    by_id[r.id] = std::make_shared<const Tenant>(std::move(t));
  }
  for (const auto& k : *keys) {
    if (k.revoked) continue;
    auto it = by_id.find(k.tenant);
    if (it != by_id.end()) dir->AddKey(it->second, k.key_sha256, k.id);
  }
  {
    std::lock_guard lock(directory_mu_);
    // Reloads may run at once (the poller's, a key's look, an admin change's): one that read an
    // older version than the one installed must not put its older keys back.
    if (*version < version_) return {};
    directory_ = std::move(dir);
    version_ = *version;
  }
  // Limits follow the records: a changed rpm, tpm or budget takes effect now.
  std::lock_guard lock(mu_);
  for (auto& [id, limits] : limits_) {
    auto it = by_id.find(id);
    if (it == by_id.end()) continue;
    const Tenant& t = *it->second;
    // Only a changed limit starts a fresh bucket: a reload for another tenant's key must not
    // refill this one's.
    // refill this one's, and a changed one keeps counting what the last minute used.
    if (limits.rpm.per_minute() != static_cast<double>(t.rpm)) {
      limits.rpm.Resize(static_cast<double>(t.rpm), NowS());
    }
    if (limits.tpm.per_minute() != static_cast<double>(t.tpm)) {
      limits.tpm.Resize(static_cast<double>(t.tpm), NowS());
    }
    if (limits.budget_usd != t.budget_usd) {
      // A changed budget is the store's to apply: the next request here asks for a lease
      // against it (a smaller one takes effect at once, not a spare part later).
      limits.budget_usd = t.budget_usd;
      limits.lease.Trim(0);
    }
    if (limits.lease.period() != t.budget_period) {
      limits.lease.SetPeriod(t.budget_period, UnixMsNow());
      limits.told_granted_usd = limits.told_settled_usd = limits.told_spent_usd = -1;
    }
  }
  return {};
}

void Tenancy::Poll(std::chrono::milliseconds resync_every) {
  if (!store_) return;
  // An unreachable store is not logged here every 250 ms (the leases' refresh logs it once).
  if (KnownVersionIsOld()) {
    if (auto r = Reload(); !r) spdlog::warn("tenancy: reload failed: {}", r.error());
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - last_resync_ >= resync_every) {
    last_resync_ = now;
    ShareUsage();
    std::lock_guard leases(lease_mu_);
    RefreshLeases();
  }
}

Tenancy::Limits& Tenancy::LimitsOf(const Tenant& tenant) {
  auto it = limits_.find(tenant.id);
  if (it != limits_.end()) return it->second;
  // From the directory as it is now: the request's copy may be older than a reload that has
  // already updated every tenant's limits but this one's, which did not exist yet.
  const auto current = directory()->Find(tenant.id);
  const Tenant& t = current ? *current : tenant;
  Limits l{core::MinuteBucket(static_cast<double>(t.rpm)),
           core::MinuteBucket(static_cast<double>(t.tpm)),
           core::BudgetBook(t.budget_usd, t.budget_period), core::BudgetLease(t.budget_period),
           t.budget_usd};
  return limits_.emplace(tenant.id, l).first->second;
}

double Tenancy::Spare(double budget_usd, double request_usd) {
  return std::max(budget_usd / 50, 4 * request_usd);
}

bool Tenancy::LeaseTrusted() const {
  const auto now = std::chrono::steady_clock::now().time_since_epoch();
  return std::chrono::nanoseconds(lease_trusted_until_ns_.load(std::memory_order_acquire)) > now;
}

void Tenancy::TrustLeases(std::chrono::steady_clock::time_point heard_at) {
  const auto until = heard_at.time_since_epoch() + kLeaseTrust;
  lease_trusted_until_ns_.store(std::chrono::nanoseconds(until).count(), std::memory_order_release);
}

bool Tenancy::RefreshLeases(bool release) {
  const std::int64_t now_ms = UnixMsNow();
  std::vector<store::BudgetLeaseRow> told;
  std::vector<std::pair<std::string, double>> busy;  // with the spare each keeps.
  {
    std::lock_guard lock(mu_);
    for (auto& [id, l] : limits_) {
      if (l.lease.period_start_ms() < 0) continue;  // never leased here.
      l.lease.Roll(now_ms);
      const double spare = Spare(l.budget_usd, l.lease.largest_busy_usd());
      // While the store cannot be told, nobody else could have what is given back: keep it, for
      // the requests that come before the store is back.
      const double keep = lease_unreachable_ && !release ? l.lease.granted_usd()
                                                         : l.lease.Trim(release ? 0.0 : spare);
      if (l.lease.busy() && !release) busy.emplace_back(id, spare);
      if (keep == l.told_granted_usd && l.lease.committed_usd() == l.told_settled_usd &&
          l.lease.settled_usd() == l.told_spent_usd) {
        continue;
      }
      told.push_back({id, l.lease.period_start_ms(), member_, keep, l.lease.committed_usd(),
                      l.lease.settled_usd()});
    }
  }
  // Every lease of this gateway is marked heard from, whether or not it moved.
  const auto asked_at = std::chrono::steady_clock::now();
  auto stored = store_->RefreshBudgetLeases(member_, told);
  lease_unreachable_ = !stored;
  if (!stored) {
    if (!lease_warned_) spdlog::warn("tenancy: budget leases not refreshed: {}", stored.error());
    lease_warned_ = true;
    return false;
  }
  lease_warned_ = false;
  std::vector<std::pair<std::string, double>> short_of_spare;  // with the spare each wants.
  {
    std::lock_guard lock(mu_);
    for (const auto& row : told) {
      Limits& l = limits_.at(row.tenant);
      l.told_granted_usd = row.granted_usd;
      l.told_settled_usd = row.settled_usd;
      l.told_spent_usd = row.spent_usd;
    }
    // Each lease is capped at what the store holds for it (a write in doubt may have shrunk it
    // there), nothing where its row is gone (removed with its period by a gateway already in
    // the next one).
    std::unordered_map<std::string, const store::BudgetLeaseRow*> rows;
    for (const auto& row : *stored) rows[row.tenant] = &row;
    std::unordered_set<std::string> wanted;
    for (auto& [id, l] : limits_) {
      if (l.lease.period_start_ms() < 0 || l.lease.granted_usd() <= 0) continue;
      auto it = rows.find(id);
      const bool held = it != rows.end() && it->second->period_start_ms == l.lease.period_start_ms();
      l.lease.Cap(held ? it->second->granted_usd : 0.0, l.lease.period_start_ms());
      if (held && it->second->wanted) {
        // Another gateway was refused while this one held a spare part: give it back (here now,
        // in the store at the next refresh), and ask for none ahead.
        l.lease.Cap(l.lease.in_use_usd(), l.lease.period_start_ms());
        l.told_granted_usd = -1;
        l.wanted_until_ms = now_ms + kWantedHoldMs;
        wanted.insert(id);
      }
    }
    TrustLeases(asked_at);  // once capped: no request reserves against more than the store has.
    // Busy, and less than half its spare left: ask for more before a request must wait.
    for (const auto& [id, spare] : busy) {
      const Limits& l = limits_.at(id);
      if (wanted.contains(id)) continue;
      if (l.lease.granted_usd() - l.lease.in_use_usd() < spare / 2) {
        short_of_spare.emplace_back(id, spare);
      }
    }
  }
  for (const auto& [tenant, spare] : short_of_spare) {
    if (!AskStoreForLease(tenant, 0, spare).grant) break;
  }
  return true;
}

Tenancy::LeaseAnswer Tenancy::AskStoreForLease(const std::string& tenant, double request_usd,
                                               double spare_usd) {
  store::BudgetLeaseAsk ask;
  {
    std::lock_guard lock(mu_);
    Limits& l = limits_.at(tenant);
    if (UnixMsNow() < l.wanted_until_ms) {
      // What the lease has freed since the store said it is wanted goes back now.
      l.lease.Cap(l.lease.in_use_usd(), l.lease.period_start_ms());
    }
    const core::BudgetLease& lease = l.lease;
    ask.tenant = tenant;
    ask.period_start_ms = lease.period_start_ms();
    ask.period = core::ToString(lease.period());
    ask.member = member_;
    ask.holds_usd = lease.granted_usd();
    ask.need_usd = std::max(ask.holds_usd, lease.in_use_usd() + request_usd);
    ask.want_usd = std::max(ask.need_usd, lease.in_use_usd() + request_usd + spare_usd);
    ask.settled_usd = lease.committed_usd();  // what the store's ledger holds of it.
    ask.spent_usd = lease.settled_usd();
  }
  auto grant = store_->GrowBudgetLease(ask, kLeaseSilentMs);
  std::lock_guard lock(mu_);
  Limits& l = limits_.at(tenant);
  l.told_granted_usd = -1;  // the store's figure may have moved, even on an error.
  if (grant && !grant->period_changed) l.lease.Grow(grant->granted_usd, ask.period_start_ms);
  return {std::move(ask), std::move(grant)};
}

void Tenancy::ShareRateLimits(std::unique_ptr<SharedBuckets> table) {
  shared_buckets_ = std::move(table);
  // The processes sharing this table count each other already: one domain.
  std::lock_guard lock(usage_mu_);
  if (fleet_usage_) fleet_usage_->set_domain(shared_buckets_->domain());
}

void Tenancy::NoteTaken(const Tenant& tenant, double requests, double tokens) {
  if (!store_) return;  // no store: no other gateway to tell.
  std::lock_guard lock(usage_mu_);
  fleet_usage_->Took(tenant.id, requests, tokens);
}

void Tenancy::ShareUsage() {
  // By the store's clock: rows written this far back are read again (other gateways' commits
  // may lag), and members whose heartbeat is this old are removed with their rows.
  constexpr std::int64_t kLookBackMs = 10 * 1000, kSilentMs = 10 * 60 * 1000;
  std::vector<core::MemberUsage> mine;
  {
    std::lock_guard lock(usage_mu_);
    mine = fleet_usage_->ToPublish();
  }
  std::vector<store::RateUsageRow> out;
  out.reserve(mine.size());
  for (const auto& u : mine) {
    out.push_back({u.member, u.domain, u.tenant, u.totals.requests, u.totals.tokens,
                   u.started_ms, 0});
  }
  auto put = store_->PutRateUsage(out);
  {
    std::lock_guard lock(usage_mu_);
    // Once written, or all again next time (the store may have lost this member meanwhile).
    if (put) {
      fleet_usage_->Published(mine);
    } else {
      fleet_usage_->PublishAllAgain();
    }
  }
  // Meanwhile this gateway holds tenants to its own buckets alone.
  const auto unshared = [this](const std::string& error) {
    if (!usage_warned_) spdlog::warn("tenancy: rate limits not shared: {}", error);
    usage_warned_ = true;
  };
  if (!put) return unshared(put.error());
  if (++usage_looks_ % 60 == 1) {
    if (auto r = store_->ForgetSilentMembers(kSilentMs); !r) return unshared(r.error());
  }
  auto read = store_->RateUsage(usage_baseline_read_ ? kLookBackMs : -1);
  if (!read) return unshared(read.error());
  usage_warned_ = false;
  usage_baseline_read_ = true;
  std::vector<core::MemberUsage> rows;
  rows.reserve(read->size());
  for (auto& r : *read) {
    rows.push_back({std::move(r.member), std::move(r.domain), std::move(r.tenant),
                    {r.requests, r.tokens}, r.started_unix_ms, r.updated_unix_ms});
  }
  // Absorb's state is the poller's own: no lock against the request path.
  const auto charges = fleet_usage_->Absorb(rows);
  rate_limit_peers_.store(fleet_usage_->peers(kLookBackMs), std::memory_order_relaxed);
  const auto dir = directory();
  const double now = NowS();
  for (const auto& [tenant_id, taken] : charges) {
    auto tenant = dir->Find(tenant_id);
    if (!tenant || (tenant->rpm <= 0 && tenant->tpm <= 0)) continue;
    const auto apply = [now](core::MinuteBucket& bucket, double n) {
      if (bucket.unlimited()) return;
      if (n > 0) bucket.Charge(n, now);
      if (n < 0) bucket.Refund(-n, now);
    };
    WithBuckets(*tenant, [&](core::MinuteBucket& rpm, core::MinuteBucket& tpm) {
      apply(rpm, taken.requests);
      apply(tpm, taken.tokens);
    });
  }
}

template <typename Use>
void Tenancy::WithBuckets(const Tenant& tenant, Use&& use) {
  if (shared_buckets_) {
    const SharedBuckets::Limits limits{tenant.id, static_cast<double>(tenant.rpm),
                                       static_cast<double>(tenant.tpm), tenant.version};
    if (shared_buckets_->With(limits, use)) return;
  }
  std::lock_guard lock(mu_);
  Limits& l = LimitsOf(tenant);
  use(l.rpm, l.tpm);
}

Admission Tenancy::AdmitRate(const Tenant& tenant, std::int64_t worst_tokens) {
  if (tenant.rpm <= 0 && tenant.tpm <= 0) return {Admission::Verdict::kOk};
  const double now = NowS();
  Admission admission{Admission::Verdict::kOk};
  WithBuckets(tenant, [&](core::MinuteBucket& rpm, core::MinuteBucket& tpm) {
    if (double wait = rpm.TryTake(1, now); wait > 0) {
      admission = {Admission::Verdict::kRateLimited, RetryAfter(wait)};
    } else if (wait = tpm.TryTake(static_cast<double>(worst_tokens), now); wait > 0) {
      rpm.Refund(1, now);
      admission = {Admission::Verdict::kTokenLimited, RetryAfter(wait)};
    }
  });
  if (admission.verdict == Admission::Verdict::kOk) {
    NoteTaken(tenant, 1, static_cast<double>(worst_tokens));
  }
  return admission;
}

Admission Tenancy::AdmitSpend(const Tenant& tenant, double worst_usd, bool from_grant) {
  if (ledger_ && !ledger_->TryReserve()) return {Admission::Verdict::kLedgerFull, 1};
  if (tenant.budget_usd <= 0) return {Admission::Verdict::kOk};
  const std::int64_t now_ms = UnixMsNow();
  std::lock_guard lock(mu_);
  Limits& l = LimitsOf(tenant);
  const bool others_wait = !from_grant && now_ms < l.wanted_until_ms;
  const bool admitted =
      store_ ? LeaseTrusted() && !others_wait && l.lease.TryReserve(worst_usd, now_ms)
             : l.budget.TryReserve(worst_usd, now_ms);
  if (admitted) return {Admission::Verdict::kOk};
  if (ledger_) ledger_->Release();
  return {store_ ? Admission::Verdict::kNeedsLease : Admission::Verdict::kOverBudget, 0};
}

void Tenancy::GrowLease(std::shared_ptr<const Tenant> tenant, double worst_usd,
                        std::function<void(Admission)> done) {
  boost::asio::post(*lease_worker_, [this, tenant = std::move(tenant), worst_usd,
                                     done = std::move(done)] {
    Admission admission{Admission::Verdict::kOk};
    {
      std::lock_guard leases(lease_mu_);
      admission = AdmitWithLease(*tenant, worst_usd);
    }
    done(admission);
  });
}

Admission Tenancy::AdmitWithLease(const Tenant& tenant, double worst_usd) {
  using Verdict = Admission::Verdict;
  // Leases are trusted again only once the store has heard from every one of them.
  if (!LeaseTrusted() && !RefreshLeases()) {
    if (!trust_lapse_warned_) {
      spdlog::warn("tenancy: the store has not heard from this gateway for {} s: budgeted "
                   "requests are answered 503 budget_store_unreachable until it does",
                   std::chrono::duration_cast<std::chrono::seconds>(kLeaseTrust).count());
    }
    trust_lapse_warned_ = true;
    return {Verdict::kBudgetUnreachable, 1};
  }
  trust_lapse_warned_ = false;
  // Other requests here may take what is granted before this one does: ask again, a few times.
  bool granted = false;  // the store has grown the lease for this request.
  for (int ask = 0; ask < 3; ++ask) {
    const Admission admission = AdmitSpend(tenant, worst_usd, /*from_grant=*/granted);
    if (admission.verdict != Verdict::kNeedsLease) return admission;
    if (!LeaseTrusted()) return {Verdict::kBudgetUnreachable, 1};
    double spare;
    {
      std::lock_guard lock(mu_);
      Limits& l = LimitsOf(tenant);
      l.lease.Roll(UnixMsNow());
      spare = Spare(l.budget_usd, worst_usd);
    }
    const auto [row, grant] = AskStoreForLease(tenant.id, worst_usd, spare);
    if (!grant) {
      // Once until the store answers again (an outage would log every refused request).
      if (!lease_warned_) spdlog::warn("tenancy: no budget lease for {}: {}", tenant.id, grant.error());
      lease_warned_ = true;
      return {Verdict::kBudgetUnreachable, 1};
    }
    lease_warned_ = false;
    if (grant->period_changed) {
      // This gateway's view of the tenant is older than the store's: read it, and ask again.
      if (auto r = Reload(); !r) return {Verdict::kBudgetUnreachable, 1};
      continue;
    }
    double short_by;
    {
      std::lock_guard lock(mu_);
      const core::BudgetLease& lease = LimitsOf(tenant).lease;
      short_by = lease.in_use_usd() + worst_usd - lease.granted_usd();
    }
    if (short_by > 0 && grant->granted_usd < row.need_usd) {
      // The store had too little free: the budget is spent, or held by other gateways (which
      // give back their spare now that this one was refused).
      if (grant->free_usd + grant->held_elsewhere_usd >= row.need_usd) {
        return {Verdict::kBudgetLeasedElsewhere, 2};
      }
      if (grant->free_usd + grant->held_elsewhere_usd + grant->held_silent_usd >= row.need_usd) {
        // Refused only because gateways gone silent hold the rest: the operator should know.
        const auto now = std::chrono::steady_clock::now();
        if (now - silent_holders_warned_ >= std::chrono::minutes(1)) {
          silent_holders_warned_ = now;
          spdlog::warn("tenancy: {:.6f} USD of tenant {}'s budget is held by gateways not heard "
                       "from for {} s; if they will not run again, retire them "
                       "(GET /admin/gateways, DELETE /admin/gateways/{{member}})",
                       grant->held_silent_usd, tenant.id, kLeaseSilentMs / 1000);
        }
      }
      return {Verdict::kOverBudget, 0};
    }
    granted = true;
  }
  // Granted each time, and each time taken by other requests here first.
  const Admission last = AdmitSpend(tenant, worst_usd, /*from_grant=*/granted);
  if (last.verdict != Verdict::kNeedsLease) return last;
  return {LeaseTrusted() ? Verdict::kBudgetLeasedElsewhere : Verdict::kBudgetUnreachable, 1};
}

void Tenancy::Cancel(const Tenant& tenant, std::int64_t worst_tokens, double worst_usd,
                     bool had_slot) {
  if (had_slot && ledger_) ledger_->Release();
  if (tenant.rpm > 0 || tenant.tpm > 0) {
    const double now = NowS();
    WithBuckets(tenant, [&](core::MinuteBucket& rpm, core::MinuteBucket& tpm) {
      rpm.Refund(1, now);
      tpm.Refund(static_cast<double>(worst_tokens), now);
    });
    NoteTaken(tenant, -1, -static_cast<double>(worst_tokens));
  }
  if (had_slot && tenant.budget_usd > 0) SettleSpend(tenant, worst_usd, 0);
}

void Tenancy::Settle(const Tenant& tenant, std::int64_t worst_tokens, std::int64_t used_tokens,
                     double worst_usd, double charged_usd) {
  if (tenant.tpm > 0) {  // (every request settles: no clock read without a bucket to refill.)
    const double now = NowS();
    WithBuckets(tenant, [&](core::MinuteBucket&, core::MinuteBucket& tpm) {
      if (used_tokens <= worst_tokens) {
        tpm.Refund(static_cast<double>(worst_tokens - used_tokens), now);
      } else {
        tpm.Charge(static_cast<double>(used_tokens - worst_tokens), now);
      }
    });
    NoteTaken(tenant, 0, static_cast<double>(used_tokens - worst_tokens));
  }
  if (tenant.budget_usd > 0) SettleSpend(tenant, worst_usd, charged_usd);
}

void Tenancy::SettleSpend(const Tenant& tenant, double worst_usd, double charged_usd) {
  std::lock_guard lock(mu_);
  Limits& l = LimitsOf(tenant);
  if (store_) {
    l.lease.Settle(worst_usd, charged_usd);
  } else {
    l.budget.Settle(worst_usd, charged_usd);
  }
}

void Tenancy::Record(store::LedgerRow row, std::function<void(bool)> done) {
  if (!ledger_) {
    done(true);
    return;
  }
  if (wait_for_commit_) {
    // A row the store did not take after the writer's retries is journaled instead (durable
    // across a crash of the process, not a power loss): the writer retries it, and a restart
    // replays it. Without this the row would be lost where the default mode keeps it.
    done = [this, copy = row, done = std::move(done)](bool durable) mutable {
      if (!durable && ledger_->TryReserve()) {
        durable = ledger_->CommitJournaled(copy);
        if (!durable) ledger_->Release();  // no journal (no state folder), or it failed.
        if (durable) spdlog::warn("ledger: {} journaled after its commit failed", copy.request_id);
      }
      done(durable);
    };
  }
  ledger_->Commit(std::move(row), std::move(done));
}

void Tenancy::LedgerWritten(std::span<const store::LedgerRow> rows) {
  std::lock_guard lock(mu_);
  for (const auto& row : rows) {
    if (row.charged_usd == 0) continue;
    auto it = limits_.find(row.tenant);
    if (it != limits_.end()) it->second.lease.Committed(row.charged_usd, row.end_unix_ms);
  }
}

void Tenancy::DrainCallbacks() {
  // Nothing is asked once the request path stopped.
  if (key_worker_) key_worker_->join();
  if (lease_worker_) lease_worker_->join();
  FlushLedger();
}

bool Tenancy::FlushLedger() {
  return !ledger_ || ledger_->Flush(std::chrono::seconds(5));
}

bool Tenancy::RecordNow(store::LedgerRow& row) {
  return ledger_ && !wait_for_commit_ && ledger_->CommitJournaled(row);
}

void Tenancy::Audit(std::string actor, std::string action, std::string detail) {
  if (!store_) {
    spdlog::info("audit: {} {} {}", actor, action, detail);
    return;
  }
  // Which gateway of the store made the change or the refusal: "admin@<member>".
  if (!member_.empty()) actor += "@" + member_;
  store::AuditRow row{UnixMsNow(), std::move(actor), std::move(action), std::move(detail)};
  boost::asio::post(*audit_worker_, [this, row = std::move(row)] {
    if (auto r = store_->AppendAudit(row); !r) {
      spdlog::warn("audit: {} ({} {})", r.error(), row.action, row.detail);
    }
  });
}

int Tenancy::ExpectedOutputTokens(const Tenant& tenant, int fallback) {
  std::lock_guard lock(mu_);
  auto it = output_lengths_.find(tenant.id);
  return it == output_lengths_.end() ? fallback : it->second.Expected();
}

void Tenancy::ObserveOutputTokens(const Tenant& tenant, int fallback,
                                  std::int64_t completion_tokens) {
  std::lock_guard lock(mu_);
  auto it = output_lengths_.try_emplace(tenant.id, core::OutputLengthEstimate(fallback)).first;
  it->second.Observe(static_cast<int>(std::min<std::int64_t>(completion_tokens, 1 << 20)));
}

store::LedgerWriter::Counters Tenancy::ledger_counters() const {
  return ledger_ ? ledger_->counters() : store::LedgerWriter::Counters{};
}

}  // namespace powerplane::gateway
