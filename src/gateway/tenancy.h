#pragma once
// Tenancy for the gateway: who a key belongs to (from the fleet file, or from the durable store
// when there is one, reloaded when the store's version moves), each tenant's requests- and
// tokens-per-minute buckets and budget (a book of its own, or with a store a lease on part of the
// budget that the gateways sharing it split: core::BudgetLease), the ledger (one durable row per
// request, written in group commits off the hot path) and the audit log. Thread-safe.

#include <atomic>
#include <chrono>
#include <expected>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <filesystem>
#include <unordered_map>
#include <vector>

#include "core/fleet_usage.h"
#include "core/limits.h"
#include "core/output_length.h"
#include "gateway/shared_buckets.h"
#include "gateway/tenants.h"
#include "store/ledger_writer.h"
#include "store/store.h"

namespace boost::asio {
class thread_pool;
}

namespace powerplane::gateway {

struct TenancyOptions {
  std::size_t ledger_capacity = 65536;  // requests in flight with a ledger slot, at most.
  // Where ledger rows are journaled before they reach the store (store/ledger_journal.h); empty:
  // no journal, and each request waits for its row's group commit instead.
  std::filesystem::path journal_dir;
  // Every request waits for its row's group commit even with a journal (which then only hands
  // the store what an earlier run left): for a store that flushes each commit to disk.
  bool wait_for_commit = false;
};

// The answer to "may this request start?".
struct Admission {
  enum class Verdict {
    kOk,
    kRateLimited,
    kTokenLimited,
    kOverBudget,
    kLedgerFull,
    // With a store: this gateway's lease on the budget is too small; ask for more (GrowLease).
    kNeedsLease,
    // The rest of the budget is leased to other gateways, which give back what they do not use
    // within a second or two of going idle.
    kBudgetLeasedElsewhere,
    // The store could not be asked for more of the budget.
    kBudgetUnreachable,
  } verdict;
  int retry_after_s = 0;
};

// The store counts a gateway it has not heard from for this long as holding nothing of its
// budget leases that it would give back (its grants stay until it is retired).
inline constexpr std::int64_t kLeaseSilentMs = 60'000;

class Tenancy {
 public:
  // Without a store: the fleet file's tenants only, no ledger.
  explicit Tenancy(TenantDirectory config_tenants);
  // With a store: tenants and keys come from it (the fleet file's are seeded into it by the
  // caller); rows go to its ledger.
  static std::expected<std::unique_ptr<Tenancy>, std::string> WithStore(
      std::unique_ptr<store::Store> store, TenancyOptions options = {});
  ~Tenancy();

  // Takes requests- and tokens-per-minute from `table` from now on, shared with the other
  // processes that open its file (--reuse-port), instead of from this process's own buckets.
  // Call before serving.
  void ShareRateLimits(std::unique_ptr<SharedBuckets> table);

  Identity Identify(std::string_view api_key) const;
  // For a key Identify does not know, with a store: looks whether the store's tenants or keys
  // changed (a key made at another gateway a moment ago, before this one's poll saw it),
  // reloads them if so, then calls `done` with Identify's answer, from a thread of its own. One
  // look at a time: the keys that come while one runs share the next, so unknown keys cost the
  // store one read at a time at most.
  void IdentifyAfterLook(std::string api_key, std::function<void(Identity)> done);
  std::shared_ptr<const TenantDirectory> directory() const;

  // Takes one request and `worst_tokens` from the tenant's per-minute buckets.
  Admission AdmitRate(const Tenant& tenant, std::int64_t worst_tokens);
  // Reserves a ledger slot and `worst_usd` of the tenant's budget. With a store, only within this
  // gateway's lease on the budget: kNeedsLease (nothing taken) when that is too small.
  // `from_grant`: the lease was just grown for this request (AdmitWithLease): it may take from
  // it even while others wait for what the lease frees.
  Admission AdmitSpend(const Tenant& tenant, double worst_usd, bool from_grant = false);
  // Asks the store for more of the tenant's budget (off the caller's thread, as the store may
  // take a while), then admits as AdmitSpend does; calls `done` from the asking thread. Never
  // answers kNeedsLease.
  void GrowLease(std::shared_ptr<const Tenant> tenant, double worst_usd,
                 std::function<void(Admission)> done);
  // Gives back what AdmitRate and AdmitSpend took, for a request that never started.
  void Cancel(const Tenant& tenant, std::int64_t worst_tokens, double worst_usd, bool had_slot);
  // A request ended: settles tokens and spend against what was reserved.
  void Settle(const Tenant& tenant, std::int64_t worst_tokens, std::int64_t used_tokens,
              double worst_usd, double charged_usd);
  // Writes the row (in a reserved slot) and calls `done(durable)` once it is committed (from the
  // writer thread). Without a store, calls done(true) at once.
  void Record(store::LedgerRow row, std::function<void(bool)> done);
  // Makes `row` durable before returning, by journaling it (true); false when there is no
  // journal, the journal failed or every row waits for its commit (wait_for_commit), and the
  // row, untouched, must go through Record.
  bool RecordNow(store::LedgerRow& row);
  // Waits until the rows queued so far are in the store (LedgerWriter::Flush); true without one.
  bool FlushLedger();
  // Once the request path has stopped, before the executors that requests wait on are gone:
  // answers every lease request still queued and waits for the ledger's queued rows, so that no
  // callback reaches a destroyed executor later.
  void DrainCallbacks();
  bool has_store() const { return store_ != nullptr; }
  // This process's name among the gateways of the store (its budget leases' member).
  const std::string& member() const { return member_; }
  // Other gateway processes (other rate-limit domains) sharing the store whose use of tenants'
  // per-minute limits this one counts, as of its last look (/metrics).
  std::size_t rate_limit_peers() const { return rate_limit_peers_.load(std::memory_order_relaxed); }
  store::Store* store() const { return store_.get(); }

  // Appends to the audit log off the caller's thread (a no-op without a store).
  void Audit(std::string actor, std::string action, std::string detail);

  // Reloads tenants and keys when the store's version moved; every `resync_every` it shares
  // per-minute usage with the other gateways of the store (ShareUsage) and refreshes the budget
  // leases (RefreshLeases). Call every ~250 ms.
  void Poll(std::chrono::milliseconds resync_every = std::chrono::milliseconds(1000));
  // Reloads now (after a local change).
  std::expected<void, std::string> Reload();
  // True when the store's tenants and keys changed since the last load (false when the store
  // cannot say).
  bool KnownVersionIsOld() const;

  store::LedgerWriter::Counters ledger_counters() const;

  // The output length to plan a tenant's requests with: learned from its finished requests
  // (core/output_length.h), `fallback` until one has finished.
  int ExpectedOutputTokens(const Tenant& tenant, int fallback);
  void ObserveOutputTokens(const Tenant& tenant, int fallback, std::int64_t completion_tokens);

 private:
  struct Limits {
    core::MinuteBucket rpm, tpm;
    core::BudgetBook budget;  // without a store.
    core::BudgetLease lease;  // with one.
    double budget_usd = 0;
    // What the store was last told of the lease (RefreshLeases writes only what moved).
    double told_granted_usd = -1, told_settled_usd = -1, told_spent_usd = -1;
    // Until then (unix ms), other gateways wait for what this lease frees (the store said it
    // is wanted): what a request here frees goes back to the store rather than to the next
    // request here, which asks the store, in turn, as theirs do.
    std::int64_t wanted_until_ms = 0;
  };
  Tenancy() = default;
  Limits& LimitsOf(const Tenant& tenant);  // mu_ held.
  // The part of a budget a lease asks for beyond the request that asks (so the next ones need
  // not): a fiftieth of the budget, or four such requests when that is more.
  static double Spare(double budget_usd, double request_usd);
  void SettleSpend(const Tenant& tenant, double worst_usd, double charged_usd);
  // The ledger writer wrote `rows` (this process's own, from its thread): their charges are now
  // in the store, and the leases may say so (BudgetLease::Committed).
  void LedgerWritten(std::span<const store::LedgerRow> rows);
  // Asks the store for more of `tenant`'s budget: room for `request_usd` more, and `spare_usd`
  // beyond it; grows the lease here by what it grants (not for a stale period). lease_mu_ held,
  // mu_ not; the tenant's limits exist. Returns the ask and the store's answer.
  struct LeaseAnswer {
    store::BudgetLeaseAsk ask;
    store::Result<store::BudgetGrant> grant;
  };
  LeaseAnswer AskStoreForLease(const std::string& tenant, double request_usd, double spare_usd);
  // The lease thread's half of GrowLease; lease_mu_ held.
  Admission AdmitWithLease(const Tenant& tenant, double worst_usd);
  // Trims every lease here (a busy one keeps its spare, an idle one gives back all it does not
  // use; with `release`, all of them do), tells the store what changed and that this gateway is
  // alive, caps each lease at what the store holds, and asks for more for busy leases running
  // short. lease_mu_ held. False when the store could not be told.
  bool RefreshLeases(bool release = false);
  // Trusts the leases until kLeaseTrust after `heard_at` (the store heard from this gateway no
  // earlier).
  // A lease is trusted until kLeaseTrust after the store last heard from this gateway: the
  // store takes a gateway it has not heard from for kLeaseSilentMs as stopped, and shrinks its
  // leases, so past that a lease here could hold what the store has given to another.
  bool LeaseTrusted() const;
  void TrustLeases(std::chrono::steady_clock::time_point heard_at);
  // Publishes what this process took from tenants' per-minute limits to the store, reads what
  // the other gateways took, and charges this process's buckets with it (core/fleet_usage.h).
  void ShareUsage();
  void NoteTaken(const Tenant& tenant, double requests, double tokens);
  // Runs use(rpm, tpm) on the tenant's per-minute buckets: the shared table's, or this
  // process's own (under mu_).
  template <typename Use>
  void WithBuckets(const Tenant& tenant, Use&& use);

  std::unique_ptr<store::Store> store_;
  std::unique_ptr<store::LedgerWriter> ledger_;
  bool wait_for_commit_ = false;  // TenancyOptions::wait_for_commit.
  mutable std::mutex directory_mu_;
  std::shared_ptr<const TenantDirectory> directory_;
  std::int64_t version_ = -1;
  std::mutex mu_;
  std::unordered_map<std::string, Limits> limits_;
  std::unique_ptr<SharedBuckets> shared_buckets_;  // set before serving, or never.
  // With a store: what this process and the other gateways took from per-minute limits.
  // fleet_usage_ is made with the store and never replaced; its publishing half is used under
  // usage_mu_, its reading half (Absorb) by the poller alone.
  std::mutex usage_mu_;
  std::unique_ptr<core::FleetUsage> fleet_usage_;
  std::atomic<std::size_t> rate_limit_peers_{0};
  bool usage_baseline_read_ = false;  // the poller's own, as are the two below.
  bool usage_warned_ = false;
  std::int64_t usage_looks_ = 0;
  std::unordered_map<std::string, core::OutputLengthEstimate> output_lengths_;  // under mu_.
  std::chrono::steady_clock::time_point last_resync_{};
  std::string member_;  // this process's name among the gateways of the store.
  // Serialises the lease thread's and the poller's store calls for leases (and so the order in
  // which a lease grows and shrinks here and in the store).
  std::mutex lease_mu_;
  std::atomic<std::int64_t> lease_trusted_until_ns_{0};  // steady clock.
  bool lease_warned_ = false;  // under lease_mu_: a failure was logged, none since.
  bool lease_unreachable_ = false;  // under lease_mu_: the last refresh failed.
  bool trust_lapse_warned_ = false;  // under lease_mu_: the lapse of trust was logged.
  // Under lease_mu_: when a refusal for budget held by silent gateways was last logged.
  std::chrono::steady_clock::time_point silent_holders_warned_{};
  // One thread each (as the gateway's admin thread), running jobs in order off the request
  // path; joined, once their work is done, before anything they use goes.
  std::unique_ptr<boost::asio::thread_pool> audit_worker_;
  std::unique_ptr<boost::asio::thread_pool> lease_worker_;
  // IdentifyAfterLook: the keys waiting for the next look, and whether one is queued or running.
  void LookForKeys();
  std::mutex key_look_mu_;
  std::vector<std::pair<std::string, std::function<void(Identity)>>> key_lookers_;
  bool key_look_queued_ = false;
  std::unique_ptr<boost::asio::thread_pool> key_worker_;
};

// The tenant a store record describes.
Tenant TenantFromRecord(const store::TenantRecord& r);

// Unix milliseconds now (UTC), for ledger rows and budget periods.
std::int64_t UnixMsNow();

}  // namespace powerplane::gateway
