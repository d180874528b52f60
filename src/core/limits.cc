#include "core/limits.h"

#include <algorithm>
#include <chrono>
#include <limits>

namespace powerplane::core {

void MinuteBucket::Refill(double now_s) {
  if (last_s_ >= 0 && now_s > last_s_) {
    level_ = std::min(per_minute_, level_ + (now_s - last_s_) * per_minute_ / 60.0);
  }
  if (now_s > last_s_) last_s_ = now_s;
}

double MinuteBucket::TryTake(double n, double now_s) {
  if (unlimited()) return 0;
  Refill(now_s);
  if (n > per_minute_) return std::numeric_limits<double>::infinity();
  if (level_ >= n) {
    level_ -= n;
    return 0;
  }
  return (n - level_) * 60.0 / per_minute_;
}

void MinuteBucket::Charge(double n, double now_s) {
  if (unlimited()) return;
  Refill(now_s);
  level_ -= n;
}

void MinuteBucket::Refund(double n, double now_s) {
  if (unlimited()) return;
  Refill(now_s);
  level_ = std::min(per_minute_, level_ + n);
}

double MinuteBucket::level(double now_s) {
  Refill(now_s);
  return level_;
}

void MinuteBucket::Resize(double per_minute, double now_s) {
  if (unlimited() || per_minute <= 0) {
    *this = MinuteBucket(per_minute);
    return;
  }
  Refill(now_s);
  const double used = per_minute_ - level_;
  per_minute_ = per_minute;
  level_ = std::min(per_minute, per_minute - used);
}

bool ParseBudgetPeriod(std::string_view name, BudgetPeriod* out) {
  if (name == "none" || name.empty()) {
    *out = BudgetPeriod::kNone;
  } else if (name == "day") {
    *out = BudgetPeriod::kDay;
  } else if (name == "month") {
    *out = BudgetPeriod::kMonth;
  } else {
    return false;
  }
  return true;
}

std::string_view ToString(BudgetPeriod period) {
  switch (period) {
    case BudgetPeriod::kDay:
      return "day";
    case BudgetPeriod::kMonth:
      return "month";
    case BudgetPeriod::kNone:
      break;
  }
  return "none";
}

std::int64_t PeriodStartMs(BudgetPeriod period, std::int64_t unix_ms) {
  using namespace std::chrono;
  const sys_days day = floor<days>(sys_time<milliseconds>(milliseconds(unix_ms)));
  switch (period) {
    case BudgetPeriod::kNone:
      return 0;
    case BudgetPeriod::kDay:
      return duration_cast<milliseconds>(day.time_since_epoch()).count();
    case BudgetPeriod::kMonth: {
      const year_month_day ymd(day);
      const sys_days first = sys_days(ymd.year() / ymd.month() / 1);
      return duration_cast<milliseconds>(first.time_since_epoch()).count();
    }
  }
  return 0;
}

void BudgetBook::Roll(std::int64_t now_ms) {
  const std::int64_t start = PeriodStartMs(period_, now_ms);
  if (start != period_start_ms_) {
    if (period_start_ms_ >= 0) settled_usd_ = 0;
    period_start_ms_ = start;
  }
}

bool BudgetBook::TryReserve(double usd, std::int64_t now_ms) {
  Roll(now_ms);
  if (unlimited()) {
    reserved_usd_ += usd;
    return true;
  }
  if (!(settled_usd_ + reserved_usd_ + usd <= budget_usd_)) return false;  // NaN: refused.
  reserved_usd_ += usd;
  return true;
}

void BudgetBook::Settle(double reserved_usd, double charged_usd) {
  reserved_usd_ = std::max(0.0, reserved_usd_ - reserved_usd);
  settled_usd_ += charged_usd;
}

void BudgetLease::Roll(std::int64_t now_ms) {
  const std::int64_t start = PeriodStartMs(period_, now_ms);
  if (start != period_start_ms_) {
    settled_usd_ = 0;
    committed_usd_ = 0;
    granted_usd_ = 0;
    period_start_ms_ = start;
  }
}

void BudgetLease::SetPeriod(BudgetPeriod period, std::int64_t now_ms) {
  period_ = period;
  Roll(now_ms);  // a new start clears what was settled and granted; the same start keeps it.
}

bool BudgetLease::TryReserve(double usd, std::int64_t now_ms) {
  Roll(now_ms);
  if (!(settled_usd_ + reserved_usd_ + usd <= granted_usd_)) return false;  // NaN: refused.
  reserved_usd_ += usd;
  largest_recent_usd_ = std::max(largest_recent_usd_, usd);
  return true;
}

void BudgetLease::Settle(double reserved_usd, double charged_usd) {
  reserved_usd_ = std::max(0.0, reserved_usd_ - reserved_usd);
  settled_usd_ += charged_usd;
}

void BudgetLease::Grow(double usd, std::int64_t period_start_ms) {
  if (period_start_ms == period_start_ms_) granted_usd_ = std::max(granted_usd_, usd);
}

double BudgetLease::Trim(double spare) {
  if (largest_recent_usd_ > 0) {
    busy_trims_left_ = kBusyTrims;
    largest_busy_usd_ = std::max(largest_busy_usd_, largest_recent_usd_);
  } else if (busy_trims_left_ > 0 && --busy_trims_left_ == 0) {
    largest_busy_usd_ = 0;
  }
  largest_recent_usd_ = 0;
  const double keep = in_use_usd() + (busy_trims_left_ > 0 ? spare : 0.0);
  granted_usd_ = std::min(granted_usd_, keep);
  return granted_usd_;
}

void BudgetLease::Committed(double usd, std::int64_t end_unix_ms) {
  if (period_start_ms_ >= 0 && end_unix_ms >= period_start_ms_) committed_usd_ += usd;
}

void BudgetLease::Cap(double usd, std::int64_t period_start_ms) {
  if (period_start_ms == period_start_ms_) granted_usd_ = std::min(granted_usd_, usd);
}

}  // namespace powerplane::core
