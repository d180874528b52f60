#pragma once
// The ledger's journal: each row appended, as one line, to a local file before the response's
// last bytes leave, so it survives a kill -9 of the gateway without waiting for a database
// commit. The database gets the rows later in large batches (LedgerWriter); a restart puts any
// row left in the journal into the database again (request ids are unique there, so a row
// already written is not written twice), then deletes the journal.
//
// On a filesystem that allocates blocks in place (ext2/3/4, XFS, tmpfs), an append is a copy
// into a shared memory mapping of the segment: no system call. Once the copy is done, the line
// is in the page cache, exactly as after a write(2): the process can die at any point after and
// the kernel still writes the page back, so the line is there to replay (not proof against a
// power cut; by default the database's own commits are not fsynced either, synchronous=NORMAL;
// the gateway's --sync-ledger waits for fsynced commits instead). Such segments are allocated
// whole (posix_fallocate) before they are mapped, so a full disk fails the append that opens a
// segment, never a copy into one. Elsewhere (copy-on-write filesystems such as btrfs or ZFS,
// network filesystems), where a write into a mapping could still meet a full disk and raise
// SIGBUS, an append is one write(2) to the segment opened O_APPEND. A segment's unused tail is
// zeros; reading stops at the first zero byte, and a line cut short by a crash lacks its end
// mark and is skipped.
//
// The journal is written in segments (ledger-journal-<n>.tsv); a segment whose rows all reached
// the database is deleted once the next one is in use, so the journal's size stays bounded by
// what the database is behind plus one segment. Writers sharing a directory (gateways on one
// SQLite file) each take a slot, <dir>/<n>/, held by an flock on <dir>/slot-<n>.lock; a slot
// whose lock is free belongs to a writer that died, and its rows are replayed by the next writer
// to open the directory. Thread-safe.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "store/records.h"
#include "store/store.h"

namespace powerplane::store {

// One row as a journal line: tab-separated fields, the last "$", then '\n'; text escaped
// (\\, \t, \n, \0), numbers exact (shortest round-trip form).
std::string JournalLine(const LedgerRow& row);
// The row of one line (without its '\n'); false for a line that is not one (a torn or foreign
// line is skipped, never guessed at).
bool ParseJournalLine(std::string_view line, LedgerRow* row);

class LedgerJournal {
 public:
  static constexpr std::uintmax_t kSegmentBytes = 8u << 20;

  // Opens the journal in `dir` (created if missing) and takes a slot. Rows left by writers no
  // longer running are read into `*leftover` (their segments are deleted, and their slots freed,
  // by DropLeftovers once the database has them).
  static Result<std::unique_ptr<LedgerJournal>> Open(const std::filesystem::path& dir,
                                                     std::vector<LedgerRow>* leftover,
                                                     std::size_t segment_bytes = kSegmentBytes);
  ~LedgerJournal();

  // Deletes the segments read at Open.
  void DropLeftovers();
  // Appends `row`; the segment it went to, or -1 when it could not (a segment could not be
  // allocated: logged).
  std::int64_t Append(const LedgerRow& row);
  // `rows` rows of `segment` are in the database.
  void Written(std::int64_t segment, std::size_t rows);
  // Allocates and maps the next segment ahead of need, off the request path (the ledger writer
  // calls it after each batch), so that the append that fills a segment only renames the spare
  // into place. Does nothing before the segment in use is half full, or without mapping.
  void PrepareNext();
  static constexpr const char* kSpareName = "next.spare";

  // This writer's name (new at each Open, kept in its slot while it runs), and the names of the
  // writers gone whose rows Open read (the budget leases they held can go once those rows are in
  // the database: Store::RetireBudgetMember).
  const std::string& member() const { return member_; }
  const std::vector<std::string>& earlier_members() const { return earlier_members_; }

 private:
  LedgerJournal(std::filesystem::path dir, std::vector<std::filesystem::path> leftovers,
                std::int64_t first_segment, std::size_t segment_bytes, bool mapped);
  // A file's descriptor and, when mapped, its mapping; fd -1 when it could not be made.
  struct Mapping {
    int fd = -1;
    char* map = nullptr;
  };
  // Creates `path` (emptied), allocates `bytes` of it whole and maps them shared; fd -1 with
  // errno set, and no file left, on failure.
  static Mapping MapWhole(const std::filesystem::path& path, std::size_t bytes);
  bool OpenSegment(std::int64_t segment);  // under mu_; false with errno set.
  void CloseSegment();                     // under mu_.
  void DropDoneSegments();                 // under mu_.

  const std::filesystem::path dir_;
  std::vector<std::filesystem::path> leftovers_;
  std::mutex mu_;
  const std::size_t capacity_;  // bytes per segment.
  const bool mapped_;           // appends copy into map_; else write(2) to fd_.
  int fd_ = -1;                 // the segment in use; -1 before the first append.
  char* map_ = nullptr;
  std::int64_t segment_ = 0;
  std::size_t segment_bytes_ = 0;  // written to the segment in use.
  bool failing_ = false;           // the last append failed (logged once per streak).
  Mapping spare_;                  // <dir>/next.spare, allocated and mapped (PrepareNext).
  bool preparing_ = false;         // PrepareNext is making the spare (outside mu_).
  struct Count {
    std::size_t appended = 0;
    std::size_t written = 0;
  };
  std::map<std::int64_t, Count> counts_;
  std::string member_;
  std::vector<std::string> earlier_members_;
  int lock_fd_ = -1;            // this writer's slot lock, held for its life.
  std::vector<int> held_fds_;   // dead writers' slot locks, held until DropLeftovers.
};

}  // namespace powerplane::store
