#pragma once
// Internal to pp_store: the Store implementation shared by both backends.

#include <mutex>

#include "store/sql_connection.h"
#include "store/store.h"

namespace powerplane::store::internal {

class SqlStore final : public Store {
 public:
  // Takes the connection and creates the schema if missing. `origin` names the store in messages.
  static Result<std::unique_ptr<SqlStore>> Create(std::unique_ptr<Connection> connection,
                                                  std::string origin);

  Result<std::unique_ptr<Store>> Reopen() const override;
  std::string_view Backend() const override;
  Result<void> PutTenant(const TenantRecord& tenant) override;
  Result<std::vector<TenantRecord>> Tenants() override;
  Result<std::optional<TenantRecord>> GetTenant(std::string_view id) override;
  Result<CreatedKey> CreateKey(std::string_view tenant_id) override;
  Result<KeyRecord> AddKeyHash(std::string_view tenant_id, std::string_view key_sha256,
                               std::string_view key_id) override;
  Result<std::vector<KeyRecord>> Keys(std::optional<std::string_view> tenant) override;
  Result<bool> RevokeKey(std::string_view key_id) override;
  Result<std::int64_t> Version() override;
  Result<std::size_t> AppendLedger(std::span<const LedgerRow> rows) override;
  Result<std::vector<LedgerRow>> Ledger(std::int64_t from_ms, std::int64_t to_ms,
                                        std::optional<std::string_view> tenant) override;
  Result<bool> HasLedgerRow(std::string_view request_id) override;
  Result<std::vector<UsageRow>> Usage(std::string_view tenant, std::int64_t from_ms,
                                      std::int64_t to_ms, UsageGroup group) override;
  using Store::ChargedUsd;
  Result<std::vector<double>> ChargedUsd(std::span<const std::string> tenants,
                                         std::int64_t since_ms) override;
  Result<void> PutRateUsage(std::span<const RateUsageRow> rows) override;
  Result<std::vector<RateUsageRow>> RateUsage(std::int64_t look_back_ms) override;
  Result<void> ForgetSilentMembers(std::int64_t silent_ms) override;
  Result<BudgetGrant> GrowBudgetLease(const BudgetLeaseAsk& ask, std::int64_t silent_ms) override;
  Result<std::vector<BudgetLeaseRow>> RefreshBudgetLeases(
      std::string_view member, std::span<const BudgetLeaseRow> rows) override;
  Result<std::size_t> RetireBudgetMember(std::string_view member) override;
  Result<std::vector<BudgetLeaseState>> BudgetLeases() override;
  Result<void> AppendAudit(const AuditRow& row) override;
  Result<std::vector<AuditRow>> Audit(std::int64_t from_ms, std::int64_t to_ms) override;

 private:
  SqlStore(std::unique_ptr<Connection> connection, std::string origin);

  // Runs `body` under the mutex; an exception becomes the error message (kBusyPrefix first when
  // the connection calls it busy).
  template <typename F>
  auto Guard(F&& body) -> Result<decltype(body())> {
    std::lock_guard lock(mu_);
    try {
      return body();
    } catch (const std::exception& e) {
      std::string message = origin_ + ": " + connection_->Describe(e);
      if (connection_->IsBusy(e)) message.insert(0, kBusyPrefix);
      return std::unexpected(std::move(message));
    }
  }
  // Runs `body` in a write transaction (mutex already held): committed, or rolled back and
  // rethrown.
  template <typename F>
  void Transaction(F&& body) {
    connection_->Begin();
    try {
      body();
      connection_->Commit();
    } catch (...) {
      connection_->Rollback();
      throw;
    }
  }
  void CreateSchema();
  // ChargedUsd's query, mutex already held.
  std::vector<double> ChargedSince(std::span<const std::string> tenants, std::int64_t since_ms);
  void BumpVersion();
  void InsertKey(const KeyRecord& key);

  mutable std::mutex mu_;
  std::unique_ptr<Connection> connection_;
  const std::string origin_;
};

}  // namespace powerplane::store::internal
