#include "store/ledger_writer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <vector>

namespace powerplane::store {

Result<std::unique_ptr<LedgerWriter>> LedgerWriter::Start(
    const Store& store, std::size_t capacity, std::chrono::milliseconds max_batch_delay,
    const std::filesystem::path& journal_dir,
    std::function<void(std::span<const LedgerRow>)> on_written) {
  if (capacity == 0) return std::unexpected("ledger writer capacity must be positive");
  auto own = store.Reopen();
  if (!own) return std::unexpected(own.error());
  std::unique_ptr<LedgerJournal> journal;
  std::size_t replayed = 0;
  if (!journal_dir.empty()) {
    std::vector<LedgerRow> leftover;
    auto opened = LedgerJournal::Open(journal_dir, &leftover);
    if (!opened) return std::unexpected(opened.error());
    journal = std::move(*opened);
    // What a crash left in the journal goes to the store before anything new; a row the store
    // already has is ignored there (request ids are unique).
    for (std::size_t at = 0; at < leftover.size(); at += kMaxBatchRows) {
      const std::size_t n = std::min(kMaxBatchRows, leftover.size() - at);
      const std::vector<LedgerRow> batch(leftover.begin() + static_cast<std::ptrdiff_t>(at),
                                         leftover.begin() + static_cast<std::ptrdiff_t>(at + n));
      auto written = (*own)->AppendLedger(batch);
      if (!written) {
        return std::unexpected("ledger journal: writing " + std::to_string(leftover.size()) +
                               " rows left from an earlier run: " + written.error());
      }
      replayed += *written;
    }
    journal->DropLeftovers();
    if (!leftover.empty()) {
      // The journal holds only rows whose batch the earlier run had not seen committed (it
      // trims the rest), so this counts those, not every request that run served.
      spdlog::info("ledger journal: {} rows an earlier run journaled but had not seen stored; "
                   "{} of them were missing from the store and are written now",
                   leftover.size(), replayed);
    }
  }
  return std::unique_ptr<LedgerWriter>(new LedgerWriter(
      std::move(*own), capacity, max_batch_delay, std::move(journal), replayed,
      std::move(on_written)));
}

LedgerWriter::LedgerWriter(std::unique_ptr<Store> connection, std::size_t capacity,
                           std::chrono::milliseconds max_batch_delay,
                           std::unique_ptr<LedgerJournal> journal, std::size_t replayed,
                           std::function<void(std::span<const LedgerRow>)> on_written)
    : store_(std::move(connection)),
      journal_(std::move(journal)),
      replayed_(replayed),
      capacity_(capacity),
      max_batch_delay_(max_batch_delay),
      on_written_(std::move(on_written)) {
  thread_ = std::thread([this] { Run(); });
}

LedgerWriter::~LedgerWriter() { Stop(); }

bool LedgerWriter::TryReserve() {
  std::lock_guard lock(mu_);
  if (stopping_ || counters_.reserved >= capacity_) return false;
  ++counters_.reserved;
  return true;
}

void LedgerWriter::Release() {
  std::lock_guard lock(mu_);
  if (counters_.reserved > 0) --counters_.reserved;
}

void LedgerWriter::Enqueue(Item item) {
  if (queue_.empty()) oldest_queued_ = std::chrono::steady_clock::now();
  const bool waited_for = item.on_durable != nullptr;
  queue_.push_back(std::move(item));
  ++enqueued_;
  ++counters_.queue_depth;
  // The writer is woken only when it has something new to decide: a first row (its batch window
  // starts), a full batch, or a caller waiting for its commit (its window may shorten). Not for
  // every row: a wake per request was a context switch per request.
  if (queue_.size() == 1 || queue_.size() == kMaxBatchRows || (waited_for && waited_for_++ == 0)) {
    wake_.notify_one();
  }
}

bool LedgerWriter::CommitJournaled(LedgerRow& row) {
  if (!journal_) return false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
  }
  const std::int64_t segment = journal_->Append(row);
  if (segment < 0) return false;
  std::lock_guard lock(mu_);
  Enqueue(Item{std::move(row), nullptr, segment});
  return true;
}

void LedgerWriter::Commit(LedgerRow row, std::function<void(bool)> on_durable) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      Enqueue(Item{std::move(row), std::move(on_durable)});
      return;
    }
    if (counters_.reserved > 0) --counters_.reserved;
  }
  spdlog::error("ledger: row {} committed after the writer stopped; not written", row.request_id);
  if (on_durable) on_durable(false);
}

bool LedgerWriter::Flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  const std::uint64_t target = enqueued_;
  ++flushing_;  // the writer's batch window shortens to max_batch_delay.
  wake_.notify_one();
  const bool done = processed_cv_.wait_for(lock, timeout, [&] { return processed_ >= target; });
  --flushing_;
  return done;
}

void LedgerWriter::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    wake_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

LedgerWriter::Counters LedgerWriter::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

void LedgerWriter::Run() {
  std::vector<Item> batch;
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything is written.
    // Group commit: give the oldest row up to max_batch_delay for others to join it, or, when
    // every queued row is journaled (no caller waits), up to kJournaledBatchDelay. A flush ends
    // the wait.
    const auto window = [&] {
      return waited_for_ > 0 || flushing_ > 0 ? max_batch_delay_
                                              : std::max(max_batch_delay_, kJournaledBatchDelay);
    };
    while (!stopping_ && queue_.size() < kMaxBatchRows &&
           std::chrono::steady_clock::now() < oldest_queued_ + window()) {
      wake_.wait_until(lock, oldest_queued_ + window());
    }
    const std::size_t n = std::min(queue_.size(), kMaxBatchRows);
    batch.clear();
    batch.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (queue_.front().on_durable) --waited_for_;
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    if (!queue_.empty()) oldest_queued_ = std::chrono::steady_clock::now();
    lock.unlock();
    WriteBatch(batch);
    // The journal's next segment is allocated here, not by the request that fills this one.
    if (journal_) journal_->PrepareNext();
    lock.lock();
  }
}

void LedgerWriter::WriteBatch(std::vector<Item>& batch) {
  std::vector<LedgerRow> rows;
  rows.reserve(batch.size());
  for (auto& item : batch) rows.push_back(std::move(item.row));
  Result<std::size_t> inserted = std::unexpected(std::string("not tried"));
  int attempt = 0;
  for (; attempt < kMaxAttempts; ++attempt) {
    if (attempt > 0) {
      CountRetry();
      std::this_thread::sleep_for(std::chrono::milliseconds(10 << (2 * attempt)));
    }
    inserted = store_->AppendLedger(rows);
    if (inserted) break;
    spdlog::warn("ledger: batch of {} rows failed (attempt {} of {}): {}", rows.size(), attempt + 1,
                 kMaxAttempts, inserted.error());
  }
  std::size_t given_up = 0;
  if (!inserted) {
    // Callers waiting for their commit are told now (the gateway journals such a row if it can).
    // Journaled rows nobody waits for, and dropping them would keep them out of the store (and
    // out of usage and budgets) until a restart replayed the journal: they are tried until the
    // store takes them, however long it is away, or until the writer stops (then the journal
    // keeps them for the next start). Meanwhile their slots stay taken, so the queue stays
    // bounded: once it is full, admission answers ledger_backlog.
    std::vector<LedgerRow> journaled;
    std::string first;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].on_durable) {
        journaled.push_back(std::move(rows[i]));
      } else if (given_up++ == 0) {
        first = rows[i].request_id;
      }
    }
    if (given_up > 0) {
      spdlog::error("ledger: {} rows not written after {} attempts; first request id {}",
                    given_up, kMaxAttempts, first);
      for (auto& item : batch) {
        if (item.on_durable) item.on_durable(false);
      }
    }
    rows = std::move(journaled);
    if (!rows.empty()) inserted = RetryUntilWritten(rows);
  } else {
    for (auto& item : batch) {
      if (item.on_durable) item.on_durable(true);
    }
  }
  const bool written = inserted.has_value();
  if (written && on_written_) on_written_(rows);
  if (written && journal_) {
    // Journaled rows now in the store: their segments can go once all of theirs are.
    std::map<std::int64_t, std::size_t> per_segment;
    for (const auto& item : batch) {
      if (item.journal_segment >= 0) ++per_segment[item.journal_segment];
    }
    for (const auto& [segment, n] : per_segment) journal_->Written(segment, n);
  }
  std::lock_guard lock(mu_);
  counters_.rows_failed += written ? given_up : batch.size();
  if (written) {
    counters_.rows_written += rows.size();
    counters_.rows_duplicate += rows.size() - *inserted;
    ++counters_.batches;
  }
  counters_.queue_depth -= batch.size();
  processed_ += batch.size();
  processed_cv_.notify_all();
  counters_.reserved -= std::min(counters_.reserved, batch.size());
}

void LedgerWriter::CountRetry() {
  std::lock_guard lock(mu_);
  ++counters_.retries;
}

Result<std::size_t> LedgerWriter::RetryUntilWritten(const std::vector<LedgerRow>& rows) {
  const auto since = std::chrono::steady_clock::now();
  auto next_log = since;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (wake_.wait_for(lock, kRetryEvery, [&] { return stopping_; })) {
        spdlog::error("ledger: stopping with {} journaled rows the store has not taken; the "
                      "journal keeps them for the next start", rows.size());
        return std::unexpected(std::string("stopped"));
      }
    }
    CountRetry();
    auto inserted = store_->AppendLedger(rows);
    const auto now = std::chrono::steady_clock::now();
    if (inserted) {
      spdlog::info("ledger: {} journaled rows written after the store was away for {:.1f} s",
                   rows.size(), std::chrono::duration<double>(now - since).count());
      return inserted;
    }
    if (now >= next_log) {
      spdlog::warn("ledger: {} journaled rows still waiting for the store ({:.0f} s): {}",
                   rows.size(), std::chrono::duration<double>(now - since).count(),
                   inserted.error());
      next_log = now + std::chrono::seconds(30);
    }
  }
}

}  // namespace powerplane::store
