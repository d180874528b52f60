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

 private:
  void Refill(double now_s);
  double per_minute_;
  double level_;
  double last_s_ = -1;
};

enum class BudgetPeriod { kNone, kDay, kMonth };
bool ParseBudgetPeriod(std::string_view name, BudgetPeriod* out);

// The start (unix ms, UTC) of the period holding `unix_ms`; 0 for kNone (all time).
std::int64_t PeriodStartMs(BudgetPeriod period, std::int64_t unix_ms);

// A tenant's spend in its current period: settled (charged for completed requests) plus
// reserved (worst cases of requests in flight). A request is admitted only when its worst case
// fits under the budget next to everything settled and reserved, so spend can exceed the budget
// only by what requests in flight use beyond their reservations.
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
  // Takes the store's sum for this period (other gateways included) where it is more than what
  // is settled here. Never less: requests settled here may not be in the store yet (the ledger
  // writer commits in batches, later under load), and forgetting them would admit past the
  // budget.
  void Resync(double settled_usd) { settled_usd_ = std::max(settled_usd_, settled_usd); }
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

}  // namespace powerplane::core
