// The ledger journal (LedgerJournal) and the group-committing writer (LedgerWriter), run against
// SQLite (store_test) or, built with PP_STORE_TEST_POSTGRES, against a throwaway PostgreSQL
// server (store_postgres_test).

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "store/ledger_journal.h"
#include "store/ledger_writer.h"
#include "store/store.h"
#include "store/store_test_fixture.h"

namespace powerplane::store {
namespace {
using namespace store_testing;

TEST(LedgerJournalTest, LinesRoundTripExactly) {
  LedgerRow r = Row("req-1", "ten\tant\\x", "site\nA", "llama", kT0, 0.1 + 0.2);
  r.outcome = std::string("o\0k", 3);  // a zero byte would end a segment's lines: escaped.
  r.joules = 1.0 / 3.0;
  r.usd_per_mwh = -12.5;
  r.ttft_ms = 0;
  const std::string line = JournalLine(r);
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);  // text newlines are escaped.
  EXPECT_EQ(line.find('\0'), std::string::npos);
  LedgerRow back;
  ASSERT_TRUE(ParseJournalLine(std::string_view(line).substr(0, line.size() - 1), &back));
  EXPECT_EQ(back, r);  // doubles too, bit for bit.
  // A torn line (a crash mid-write), a foreign line, a bad escape: not rows.
  for (std::size_t cut : {std::size_t{0}, std::size_t{3}, line.size() / 2, line.size() - 3}) {
    EXPECT_FALSE(ParseJournalLine(std::string_view(line).substr(0, cut), &back)) << cut;
  }
  EXPECT_FALSE(ParseJournalLine("hello\tworld", &back));
  std::string bad = line.substr(0, line.size() - 1);
  bad.insert(bad.find("req-1") + 3, "\\q");
  EXPECT_FALSE(ParseJournalLine(bad, &back));
}

// Rows appended to the journal (copied into its segment's mapping, on this machine's
// filesystem) are there for the next run when the process dies without a word: _exit, no
// destructor, no flush. Small segments, so that the rows span several.
TEST(LedgerJournalTest, AppendedRowsOutliveTheProcessAcrossSegments) {
  const TempDir temp;
  const fs::path dir = temp.path() / "journal";
  constexpr int kRows = 40;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::vector<LedgerRow> none;
    auto journal = LedgerJournal::Open(dir, &none, 2048);
    if (!journal) ::_exit(2);
    for (int i = 0; i < kRows; ++i) {
      if ((*journal)->Append(Row(Id("k", i), "acme", "tx", "llama", kT0 + i, 1)) < 0) ::_exit(3);
    }
    ::_exit(0);  // the journal object is never destroyed.
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::size_t segments = 0;
  for (const auto& f : fs::directory_iterator(dir / "0")) segments += f.is_regular_file();
  EXPECT_GE(segments, 3u);
  std::vector<LedgerRow> leftover;
  auto reopened = LedgerJournal::Open(dir, &leftover, 2048);
  ASSERT_TRUE(reopened) << reopened.error();
  ASSERT_EQ(leftover.size(), static_cast<std::size_t>(kRows));
  for (int i = 0; i < kRows; ++i) {
    EXPECT_EQ(leftover[i], Row(Id("k", i), "acme", "tx", "llama", kT0 + i, 1)) << i;
  }
}

// A segment goes once all its rows are in the database and a newer one is in use; the last
// goes with the journal when everything is written.
TEST(LedgerJournalTest, SegmentsGoOnceTheirRowsAreWritten) {
  const TempDir temp;
  const fs::path dir = temp.path() / "journal";
  std::vector<LedgerRow> none;
  auto journal = LedgerJournal::Open(dir, &none, 2048);
  ASSERT_TRUE(journal) << journal.error();
  std::map<std::int64_t, std::size_t> per_segment;
  for (int i = 0; i < 40; ++i) {
    const std::int64_t segment = (*journal)->Append(Row(Id("w", i), "acme", "tx", "llama", kT0, 1));
    ASSERT_GE(segment, 0);
    ++per_segment[segment];
  }
  ASSERT_GE(per_segment.size(), 3u);
  const auto files = [&] {
    std::size_t n = 0;
    for (const auto& f : fs::directory_iterator(dir / "0")) n += f.path().extension() == ".tsv";
    return n;
  };
  EXPECT_EQ(files(), per_segment.size());
  const auto first = *per_segment.begin();
  (*journal)->Written(first.first, first.second - 1);
  EXPECT_EQ(files(), per_segment.size());  // one of its rows is still only here.
  (*journal)->Written(first.first, 1);
  EXPECT_EQ(files(), per_segment.size() - 1);
  for (auto it = std::next(per_segment.begin()); it != per_segment.end(); ++it) {
    (*journal)->Written(it->first, it->second);
  }
  EXPECT_EQ(files(), 1u);  // the segment in use stays while the journal is open.
  journal->reset();
  EXPECT_EQ(files(), 0u);
}

// The next segment made ready ahead (by the writer, off the request path) is what the append
// that fills a segment moves to; rows read back the same across it, and no spare is left.
TEST(LedgerJournalTest, AFullSegmentMovesToTheSpareMadeAhead) {
  const TempDir temp;
  const fs::path dir = temp.path() / "journal";
  std::vector<LedgerRow> none;
  auto journal = LedgerJournal::Open(dir, &none, 2048);
  ASSERT_TRUE(journal) << journal.error();
  const fs::path spare = dir / "0" / LedgerJournal::kSpareName;
  int rows = 0;
  const auto append = [&] {
    const int k = rows++;
    return (*journal)->Append(Row(Id("p", k), "acme", "tx", "llama", kT0 + k, 1));
  };
  (*journal)->PrepareNext();  // nothing appended yet: nothing to prepare.
  EXPECT_FALSE(fs::exists(spare));
  // Rows until the segment is half full and the spare is made.
  std::int64_t first = -1;
  while (!fs::exists(spare) && rows < 40) {
    first = append();
    (*journal)->PrepareNext();
  }
  ASSERT_TRUE(fs::exists(spare)) << "no spare after " << rows << " rows";
  EXPECT_EQ(fs::file_size(spare), 2048u);
  // Rows until one goes to the next segment.
  std::int64_t segment = first;
  while (segment == first && rows < 40) segment = append();
  ASSERT_EQ(segment, first + 1);
  EXPECT_FALSE(fs::exists(spare));  // renamed into place.
  journal->reset();  // nothing written to the database: the segments stay for the next run.
  std::vector<LedgerRow> leftover;
  auto reopened = LedgerJournal::Open(dir, &leftover, 2048);
  ASSERT_TRUE(reopened) << reopened.error();
  ASSERT_EQ(leftover.size(), static_cast<std::size_t>(rows));
  for (int k = 0; k < rows; ++k) EXPECT_EQ(leftover[k].request_id, Id("p", k)) << k;
  EXPECT_FALSE(fs::exists(spare));
}

// Rows journaled are in the store once the writer stops, and no journal file is left.
TEST_F(StoreTest, JournaledRowsReachTheStore) {
  const TempDir temp;
  const fs::path dir = temp.path() / "journal";
  auto writer = LedgerWriter::Start(*store_, 64, milliseconds(1), dir);
  ASSERT_TRUE(writer) << writer.error();
  constexpr int kRows = 40;
  for (int i = 0; i < kRows; ++i) {
    ASSERT_TRUE((*writer)->TryReserve());
    LedgerRow row = Row(Id("j", i), "acme", "tx", "llama", kT0 + i, 0.01);
    ASSERT_TRUE((*writer)->CommitJournaled(row));
  }
  (*writer)->Stop();
  EXPECT_EQ((*writer)->counters().rows_written, static_cast<std::uint64_t>(kRows));
  for (int i = 0; i < kRows; ++i) {
    EXPECT_TRUE(store_->HasLedgerRow(Id("j", i)).value_or(false)) << i;
  }
  writer->reset();
  EXPECT_TRUE(fs::is_empty(dir / "0"));
}

// A store away for longer than a batch's tries (the writer's connection meets a lock held
// elsewhere, as it would a server that is down): the journaled rows are neither dropped nor
// counted failed; they are tried again until the store takes them, then the journal lets them go.
TEST_F(StoreTest, JournaledRowsWaitOutAStoreThatIsAway) {
#ifdef PP_STORE_TEST_POSTGRES
  GTEST_SKIP() << "the store is kept away with SQLite's own lock";
#else
  const TempDir temp;
  const fs::path dir = temp.path() / "journal";
  auto quick = Store::Open("sqlite:" + (dir_ / "powerplane.db").string() + "?busy_timeout_ms=20",
                           dir_);
  ASSERT_TRUE(quick) << quick.error();
  auto writer = LedgerWriter::Start(**quick, 64, milliseconds(1), dir);
  ASSERT_TRUE(writer) << writer.error();
  sqlite3* holder = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "powerplane.db").c_str(), &holder), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(holder, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  constexpr int kRows = 5;
  for (int i = 0; i < kRows; ++i) {
    ASSERT_TRUE((*writer)->TryReserve());
    LedgerRow row = Row(Id("away", i), "acme", "tx", "llama", kT0 + i, 0.01);
    ASSERT_TRUE((*writer)->CommitJournaled(row));
  }
  // Well past the batch's kMaxAttempts tries (about 0.85 s).
  std::this_thread::sleep_for(milliseconds(2500));
  const auto during = (*writer)->counters();
  EXPECT_EQ(during.rows_failed, 0u);
  EXPECT_EQ(during.rows_written, 0u);
  EXPECT_GE(during.retries, static_cast<std::uint64_t>(LedgerWriter::kMaxAttempts));  // beyond them
  sqlite3_exec(holder, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(holder);
  EXPECT_TRUE((*writer)->Flush(milliseconds(5000)));
  EXPECT_EQ((*writer)->counters().rows_written, static_cast<std::uint64_t>(kRows));
  for (int i = 0; i < kRows; ++i) {
    EXPECT_TRUE(store_->HasLedgerRow(Id("away", i)).value_or(false)) << i;
  }
  writer->reset();
  EXPECT_TRUE(fs::is_empty(dir / "0"));
#endif
}

// What a crash left in the journal (whole lines, a torn last one, and the zeros of the segment's
// unused tail) is written to the store when the next writer starts, once: a row the store
// already had is not doubled. The dead
// writer's slot (1 here) is free, so its rows are replayed by a writer that takes slot 0.
TEST_F(StoreTest, JournalLeftByACrashIsReplayedOnce) {
  const TempDir temp;
  const fs::path dir = temp.path() / "journal";
  fs::create_directories(dir / "1");
  { std::ofstream lock(dir / "slot-1.lock"); }
  ASSERT_TRUE(store_->AppendLedger(std::vector<LedgerRow>{Row("c0", "acme", "tx", "llama", kT0, 1)}));
  {
    std::ofstream out(dir / "1" / "ledger-journal-3.tsv");
    for (int i = 0; i < 5; ++i) out << JournalLine(Row(Id("c", i), "acme", "tx", "llama", kT0 + i, 1));
    const std::string torn = JournalLine(Row("c9", "acme", "tx", "llama", kT0 + 9, 1));
    out << torn.substr(0, torn.size() / 2) << std::string(4096, '\0');
  }
  auto writer = LedgerWriter::Start(*store_, 64, milliseconds(1), dir);
  ASSERT_TRUE(writer) << writer.error();
  EXPECT_EQ((*writer)->replayed(), 4u);  // c1..c4; c0 was there, c9 was torn.
  auto rows = store_->Ledger(kT0 - 1, kT0 + 100);
  ASSERT_TRUE(rows) << rows.error();
  EXPECT_EQ(rows->size(), 5u);
  EXPECT_FALSE(store_->HasLedgerRow("c9").value_or(true));
  EXPECT_FALSE(fs::exists(dir / "1" / "ledger-journal-3.tsv"));
  // New rows go to this writer's own slot.
  ASSERT_TRUE((*writer)->TryReserve());
  LedgerRow row = Row("c10", "acme", "tx", "llama", kT0 + 10, 1);
  ASSERT_TRUE((*writer)->CommitJournaled(row));
  EXPECT_TRUE(fs::exists(dir / "0" / "ledger-journal-0.tsv"));
}

// Two writers sharing a directory (gateways on one SQLite file) journal in slots of their own:
// neither replays nor deletes the other's rows while it runs.
TEST_F(StoreTest, WritersSharingAJournalKeepToTheirOwnSlots) {
  const TempDir temp;
  const fs::path dir = temp.path() / "journal";
  auto a = LedgerWriter::Start(*store_, 64, milliseconds(1), dir);
  ASSERT_TRUE(a) << a.error();
  ASSERT_TRUE((*a)->TryReserve());
  LedgerRow first = Row("s1", "acme", "tx", "llama", kT0, 1);
  ASSERT_TRUE((*a)->CommitJournaled(first));
  auto b = LedgerWriter::Start(*store_, 64, milliseconds(1), dir);
  ASSERT_TRUE(b) << b.error();
  EXPECT_EQ((*b)->replayed(), 0u);
  EXPECT_TRUE(fs::exists(dir / "0") && fs::exists(dir / "1"));
  ASSERT_TRUE((*b)->TryReserve());
  LedgerRow second = Row("s2", "acme", "tx", "llama", kT0 + 1, 1);
  ASSERT_TRUE((*b)->CommitJournaled(second));
  a->reset();
  b->reset();
  EXPECT_TRUE(store_->HasLedgerRow("s1").value_or(false));
  EXPECT_TRUE(store_->HasLedgerRow("s2").value_or(false));
  EXPECT_TRUE(fs::is_empty(dir / "0"));
  EXPECT_TRUE(fs::is_empty(dir / "1"));
}

TEST_F(StoreTest, LedgerWriterIsBounded) {
  auto writer = LedgerWriter::Start(*store_, 3);
  ASSERT_TRUE(writer) << writer.error();
  LedgerWriter& w = **writer;
  EXPECT_TRUE(w.TryReserve());
  EXPECT_TRUE(w.TryReserve());
  EXPECT_TRUE(w.TryReserve());
  EXPECT_FALSE(w.TryReserve());
  EXPECT_EQ(w.counters().reserved, 3u);
  w.Release();
  EXPECT_TRUE(w.TryReserve());
  EXPECT_FALSE(w.TryReserve());
  w.Release();
  w.Release();
  w.Release();
  EXPECT_EQ(w.counters().reserved, 0u);
  w.Stop();
  EXPECT_FALSE(w.TryReserve());
}

TEST_F(StoreTest, LedgerWriterCallsBackAfterRowIsReadable) {
  auto reader = store_->Reopen();
  ASSERT_TRUE(reader);
  auto writer = LedgerWriter::Start(*store_, 64, milliseconds(1));
  ASSERT_TRUE(writer) << writer.error();
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, durable_and_readable = 0;
  constexpr int kRows = 50;
  for (int i = 0; i < kRows; ++i) {
    ASSERT_TRUE((*writer)->TryReserve());
    const std::string id = Id("w", i);
    (*writer)->Commit(Row(id, "acme", "tx", "llama", kT0 + i, 0.01), [&, id](bool durable) {
      // From the writer thread: the commit has returned, so another connection sees the row.
      const bool readable = (*reader)->HasLedgerRow(id).value_or(false);
      std::lock_guard lock(mu);
      if (durable && readable) ++durable_and_readable;
      ++done;
      cv.notify_all();
    });
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return done == kRows; }));
  }
  EXPECT_EQ(durable_and_readable, kRows);
  (*writer)->Stop();
  const auto c = (*writer)->counters();
  EXPECT_EQ(c.rows_written, static_cast<std::uint64_t>(kRows));
  EXPECT_GE(c.batches, 1u);
  EXPECT_EQ(c.queue_depth, 0u);
  EXPECT_EQ(c.reserved, 0u);
}

TEST_F(StoreTest, LedgerWriterStopFlushesEverything) {
  // A long batch delay: only Stop() makes the writer commit.
  auto writer = LedgerWriter::Start(*store_, 1000, milliseconds(60'000));
  ASSERT_TRUE(writer) << writer.error();
  std::atomic<int> durable{0};
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE((*writer)->TryReserve());
    (*writer)->Commit(Row(Id("s", i), "acme", "tx", "llama", kT0, 0.01),
                      [&](bool ok) { durable += ok; });
  }
  (*writer)->Commit(Row("s0", "acme", "tx", "llama", kT0, 0.01), nullptr);  // a repeat: ignored.
  EXPECT_EQ(durable.load(), 0);
  (*writer)->Stop();
  EXPECT_EQ(durable.load(), 300);
  EXPECT_EQ((*writer)->counters().rows_duplicate, 1u);
  EXPECT_EQ(store_->Ledger(0, kT0 + 1).value().size(), 300u);
  bool late = true;
  (*writer)->Commit(Row("late", "acme", "tx", "llama", kT0, 0), [&](bool ok) { late = ok; });
  EXPECT_FALSE(late);
}

}  // namespace
}  // namespace powerplane::store
