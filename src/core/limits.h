#pragma once
// Tenants' limits, pure: requests and tokens per minute (token buckets) and USD budgets per
// period (reservation at admission, settlement at completion). Time comes in as an argument.

#include <algorithm>
#include <cstdint>
#include <string_view>

namespace powerplane::core {

// A bucket that holds at most `per_minute` units and refills at per_minute / 60 each second.
// per_minute <= 0 means unlimited.
class MinuteBucket {
 public:
  explicit MinuteBucket(double per_minute = 0) : per_minute_(per_minute), level_(per_minute) {}

  bool unlimited() const { return per_minute_ <= 0; }
  double per_minute() const { return per_minute_; }
  // Takes `n` units at time `now_s` and returns 0, or takes nothing and returns the seconds
  // until `n` would be there (infinite when n exceeds the bucket itself: it never will be).
  double TryTake(double n, double now_s);
  // Takes `n` units whether or not they are there (the level may go below zero: settlement of
  // tokens used beyond a reservation).
  void Charge(double n, double now_s);
  // Gives back `n` units (a reservation not used), up to the bucket's size.
  void Refund(double n, double now_s);
  double level(double now_s);
  // The limit changed to `per_minute`: what was used within the last minute still counts (the
  // level drops or rises by the change, at most to the new size), so lowering or raising a
  // limit does not refill the bucket. From unlimited, or to it, the bucket starts full.
  void Resize(double per_minute, double now_s);

 private:
  void Refill(double now_s);
  double per_minute_;
  double level_;
  double last_s_ = -1;
};

enum class BudgetPeriod { kNone, kDay, kMonth };
bool ParseBudgetPeriod(std::string_view name, BudgetPeriod* out);
std::string_view ToString(BudgetPeriod period);  // "none", "day", "month".

// The start (unix ms, UTC) of the period holding `unix_ms`; 0 for kNone (all time).
std::int64_t PeriodStartMs(BudgetPeriod period, std::int64_t unix_ms);

// A tenant's spend in its current period at a gateway without a store (with one, BudgetLease):
// settled (charged for completed requests) plus reserved (worst cases of requests in flight). A
// request is admitted only when its worst case fits under the budget next to everything settled
// and reserved, so spend can exceed the budget only by what requests in flight use beyond their
// reservations.
class BudgetBook {
 public:
  BudgetBook() = default;
  BudgetBook(double budget_usd, BudgetPeriod period) : budget_usd_(budget_usd), period_(period) {}

  bool unlimited() const { return budget_usd_ <= 0; }
  // Moves to the period holding `now_ms` (a new period starts with nothing settled; the
  // reservations of requests in flight carry over).
  void Roll(std::int64_t now_ms);
  bool TryReserve(double usd, std::int64_t now_ms);
  // A request ended: its reservation is released and `charged_usd` settled.
  void Settle(double reserved_usd, double charged_usd);
  std::int64_t period_start_ms() const { return period_start_ms_; }
  double settled_usd() const { return settled_usd_; }
  double reserved_usd() const { return reserved_usd_; }
  double budget_usd() const { return budget_usd_; }
  BudgetPeriod period() const { return period_; }

 private:
  double budget_usd_ = 0;
  BudgetPeriod period_ = BudgetPeriod::kNone;
  std::int64_t period_start_ms_ = -1;
  double settled_usd_ = 0;
  double reserved_usd_ = 0;
};

// One gateway's lease on part of a tenant's budget, when gateways share a store
// (store::Store::GrowBudgetLease): the store grants each gateway a part, never more in all than
// the budget, and a gateway admits a request only when its worst case fits in its own part next
// to what it has settled and reserved there. So spend across gateways stays within the budget,
// however their requests interleave (beyond it only by what requests in flight use past their
// reservations). What is granted here is never more than the store holds for this gateway: a
// grant grows here after the store's has, and shrinks here before the store's does.
class BudgetLease {
 public:
  explicit BudgetLease(BudgetPeriod period = BudgetPeriod::kNone) : period_(period) {}

  // The tenant's budget period changed (an admin's edit): the lease follows it from `now_ms`.
  // What is reserved stays (requests in flight still hold it); what is settled and granted stays
  // only where the new period starts when the old one did.
  void SetPeriod(BudgetPeriod period, std::int64_t now_ms);

  // Moves to the period holding `now_ms`: a new one starts with nothing settled or granted (the
  // reservations of requests in flight carry over).
  void Roll(std::int64_t now_ms);
  bool TryReserve(double usd, std::int64_t now_ms);
  // A request ended: its reservation is released and `charged_usd` settled.
  void Settle(double reserved_usd, double charged_usd);
  // The grant to ask the store for so that `usd` more fits, with `spare` beyond it (so that the
  // next requests need not ask).
  double Want(double usd, double spare) const { return settled_usd_ + reserved_usd_ + usd + spare; }
  // The store now grants `usd` for the period starting `period_start_ms` (another period's
  // answer is ignored). A grant only grows here.
  void Grow(double usd, std::int64_t period_start_ms);
  // At a refresh: the grant to keep is what is in use, plus at most `spare` while the lease is
  // busy (anything reserved within the last kBusyTrims refreshes; nothing spare once idle, so
  // other gateways can have it). The grant shrinks to it here at once, before the store is
  // told; returns it.
  static constexpr int kBusyTrims = 30;
  double Trim(double spare);
  // A row of this lease's requests is in the ledger (its charge, its end time): what the store
  // is told this gateway settled counts only these, so that the store never takes a charge for
  // reported that it does not hold yet.
  void Committed(double usd, std::int64_t end_unix_ms);
  // The store holds less than granted here (a write in doubt, a row removed with its period), or
  // the spare is wanted elsewhere: the grant shrinks to `usd`.
  void Cap(double usd, std::int64_t period_start_ms);

  double in_use_usd() const { return settled_usd_ + reserved_usd_; }
  double granted_usd() const { return granted_usd_; }
  double settled_usd() const { return settled_usd_; }
  double reserved_usd() const { return reserved_usd_; }
  // Busy (see Trim), and the largest reservation while it has been (0 when idle).
  bool busy() const { return busy_trims_left_ > 0 || largest_recent_usd_ > 0; }
  double largest_busy_usd() const { return std::max(largest_busy_usd_, largest_recent_usd_); }
  double committed_usd() const { return committed_usd_; }
  std::int64_t period_start_ms() const { return period_start_ms_; }
  BudgetPeriod period() const { return period_; }

 private:
  BudgetPeriod period_;
  std::int64_t period_start_ms_ = -1;
  double granted_usd_ = 0;
  double settled_usd_ = 0;
  double reserved_usd_ = 0;
  double largest_recent_usd_ = 0;  // since the last Trim.
  double largest_busy_usd_ = 0;
  int busy_trims_left_ = 0;
  double committed_usd_ = 0;
};

}  // namespace powerplane::core
