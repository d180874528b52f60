#pragma once
// Writes ledger rows off the hot path: a bounded queue drained by one background thread with its
// own store connection, in group commits (everything queued, up to kMaxBatchRows, in one
// transaction), each row's callback fired once its commit returned.
//
// The bound: admission takes a slot with TryReserve() before a request starts; the slot is freed
// by Release() (not used) or after the row's commit and callback. At most `capacity` rows are
// ever queued or in flight, so the queue cannot grow without limit: when it is full, admission
// fails (the gateway answers 429 or 503) rather than memory growing. Thread-safe.
//
// With a journal (store/ledger_journal.h), CommitJournaled appends the row to a local file and
// returns: the row survives a kill -9 from then on, with no wait for a commit and no trip to the
// writer thread, and the database gets it in the next batch. Rows a crash left in the journal are
// written to the database when the next writer starts.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "store/ledger_journal.h"
#include "store/store.h"

namespace powerplane::store {

class LedgerWriter {
 public:
  static constexpr std::size_t kMaxBatchRows = 4096;
  // How long journaled rows (durable already; nobody waits for them) wait for others to join
  // their batch: fewer, larger transactions than max_batch_delay would give.
  static constexpr std::chrono::milliseconds kJournaledBatchDelay{25};
  // Tries per batch before the rows whose callers wait for their commit are reported not
  // durable. Journaled rows (durable already) are then tried every kRetryEvery until the store
  // takes them or the writer stops (the journal keeps them for the next start).
  static constexpr int kMaxAttempts = 4;
  static constexpr std::chrono::milliseconds kRetryEvery{1000};

  struct Counters {
    std::uint64_t rows_written = 0;    // committed (new or duplicate request ids).
    std::uint64_t rows_duplicate = 0;  // of those, request ids already stored.
    std::uint64_t rows_failed = 0;     // not written: waited for and given up after
                                       // kMaxAttempts, or journaled and the writer stopped.
    std::uint64_t batches = 0;         // committed transactions.
    std::uint64_t retries = 0;         // failed attempts that were retried.
    std::size_t queue_depth = 0;       // rows committed to the writer and not yet written.
    std::size_t reserved = 0;          // slots in use (queued + reserved, not yet committed).
  };

  // Opens the writer's own connection (store.Reopen()) and starts its thread. A row waits at
  // most `max_batch_delay` after it is queued for more rows to join its batch; when every queued
  // row is journaled (durable, nobody waiting), up to kJournaledBatchDelay.
  // With `journal_dir`, rows are journaled there first; rows left there by an earlier run are
  // written to the store before Start returns (an error if they cannot be). `on_written`, if
  // set, is called from the writer thread with the rows of each batch the store took (not the
  // earlier run's); it must be quick.
  static Result<std::unique_ptr<LedgerWriter>> Start(
      const Store& store, std::size_t capacity,
      std::chrono::milliseconds max_batch_delay = std::chrono::milliseconds(2),
      const std::filesystem::path& journal_dir = {},
      std::function<void(std::span<const LedgerRow>)> on_written = {});
  ~LedgerWriter();  // Stop().

  LedgerWriter(const LedgerWriter&) = delete;
  LedgerWriter& operator=(const LedgerWriter&) = delete;

  // Takes a slot; false when all `capacity` slots are in use or the writer has stopped.
  bool TryReserve();
  // Gives back a reserved slot that will not be used.
  void Release();
  // Queues `row` in a reserved slot. After the commit holding it returns, `on_durable(true)` is
  // called from the writer thread (it must be quick; it may journal a row, nothing else);
  // after kMaxAttempts failures, `on_durable(false)` (and the failure is logged). The slot is
  // freed after the callback. After Stop(), calls on_durable(false) at once.
  void Commit(LedgerRow row, std::function<void(bool durable)> on_durable);
  // Journals `row` in a reserved slot and queues it for the store: true when it is durable (in
  // the journal) on return. False when there is no journal or the append failed: the row is
  // untouched, and the caller commits it with Commit instead.
  bool CommitJournaled(LedgerRow& row);
  // Rows written to the store from an earlier run's journal when this writer started.
  std::size_t replayed() const { return replayed_; }
  // The journal (its writer's name, and the earlier writers'), or null without one.
  const LedgerJournal* journal() const { return journal_.get(); }
  // Waits, at most `timeout`, until every row queued before the call has been written (or given
  // up on): a read of the store then sees them. False on timeout.
  bool Flush(std::chrono::milliseconds timeout);
  // Writes everything queued, fires its callbacks and joins the thread. Idempotent.
  void Stop();

  Counters counters() const;
  std::size_t capacity() const { return capacity_; }

 private:
  struct Item {
    LedgerRow row;
    std::function<void(bool)> on_durable;
    std::int64_t journal_segment = -1;  // -1: not journaled.
  };
  LedgerWriter(std::unique_ptr<Store> connection, std::size_t capacity,
               std::chrono::milliseconds max_batch_delay,
               std::unique_ptr<LedgerJournal> journal, std::size_t replayed,
               std::function<void(std::span<const LedgerRow>)> on_written);
  void Enqueue(Item item);  // under mu_.
  void Run();
  void WriteBatch(std::vector<Item>& batch);
  // Tries `rows` every kRetryEvery until the store takes them (their insert count) or the
  // writer stops (an error).
  Result<std::size_t> RetryUntilWritten(const std::vector<LedgerRow>& rows);
  void CountRetry();  // a failed try about to be made again (counters().retries).

  std::unique_ptr<Store> store_;
  std::unique_ptr<LedgerJournal> journal_;
  const std::size_t replayed_;
  const std::size_t capacity_;
  const std::chrono::milliseconds max_batch_delay_;
  const std::function<void(std::span<const LedgerRow>)> on_written_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable processed_cv_;
  std::uint64_t enqueued_ = 0;   // rows ever queued.
  std::uint64_t processed_ = 0;  // of those, written or given up on.
  std::deque<Item> queue_;
  std::chrono::steady_clock::time_point oldest_queued_;
  std::size_t waited_for_ = 0;  // queued rows whose callers wait for their commit.
  std::size_t flushing_ = 0;    // Flush calls waiting.
  bool stopping_ = false;
  Counters counters_;
  std::thread thread_;
};

}  // namespace powerplane::store
