#include "store/ledger_journal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <utility>

#include "store/keys.h"

namespace powerplane::store {
namespace {

constexpr std::string_view kTag = "L1";  // the line format's version.
// The last field: a line cut short anywhere (even inside its last number) lacks it.
constexpr std::string_view kEnd = "$";
constexpr std::string_view kPrefix = "ledger-journal-";
constexpr std::string_view kSuffix = ".tsv";

void AppendText(std::string* out, std::string_view text) {
  for (char c : text) {
    switch (c) {
      case '\\': *out += "\\\\"; break;
      case '\t': *out += "\\t"; break;
      case '\n': *out += "\\n"; break;
      case '\0': *out += "\\0"; break;  // a zero byte ends a segment's lines.
      default: *out += c;
    }
  }
}

template <typename Number>
void AppendNumber(std::string* out, Number value) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof text, value).ptr;
  out->append(text, end);
}

bool ReadText(std::string_view field, std::string* out) {
  out->clear();
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '\\') {
      *out += field[i];
      continue;
    }
    if (++i == field.size()) return false;
    switch (field[i]) {
      case '\\': *out += '\\'; break;
      case 't': *out += '\t'; break;
      case 'n': *out += '\n'; break;
      case '0': *out += '\0'; break;
      default: return false;
    }
  }
  return true;
}

template <typename Number>
bool ReadNumber(std::string_view field, Number* out) {
  const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), *out);
  return ec == std::errc() && end == field.data() + field.size();
}

std::filesystem::path SegmentPath(const std::filesystem::path& dir, std::int64_t segment) {
  return dir / (std::string(kPrefix) + std::to_string(segment) + std::string(kSuffix));
}

// The segment number of a journal file's name, or -1.
std::int64_t SegmentOf(const std::filesystem::path& file) {
  const std::string name = file.filename().string();
  if (!name.starts_with(kPrefix) || !name.ends_with(kSuffix)) return -1;
  std::int64_t n = -1;
  const std::string_view digits(name.data() + kPrefix.size(),
                                name.size() - kPrefix.size() - kSuffix.size());
  return ReadNumber(digits, &n) && n >= 0 ? n : -1;
}

}  // namespace

std::string JournalLine(const LedgerRow& r) {
  std::string line;
  line.reserve(256);
  line += kTag;
  for (const std::string* text : {&r.request_id, &r.tenant, &r.key_id, &r.model, &r.site,
                                  &r.endpoint, &r.priority_class, &r.outcome}) {
    line += '\t';
    AppendText(&line, *text);
  }
  for (const std::int64_t n : {r.prompt_tokens, r.completion_tokens, r.start_unix_ms,
                               r.end_unix_ms}) {
    line += '\t';
    AppendNumber(&line, n);
  }
  for (const double x : {r.ttft_ms, r.joules, r.usd_per_mwh, r.energy_cost_usd, r.charged_usd}) {
    line += '\t';
    AppendNumber(&line, x);
  }
  line += '\t';
  line += kEnd;
  line += '\n';
  return line;
}

bool ParseJournalLine(std::string_view line, LedgerRow* r) {
  std::string_view fields[19];
  std::size_t n = 0;
  for (std::size_t start = 0;;) {
    const std::size_t tab = line.find('\t', start);
    if (n == std::size(fields)) return false;  // too many fields.
    fields[n++] = line.substr(start, tab == std::string_view::npos ? line.npos : tab - start);
    if (tab == std::string_view::npos) break;
    start = tab + 1;
  }
  if (n != std::size(fields) || fields[0] != kTag || fields[n - 1] != kEnd) return false;
  std::string* texts[] = {&r->request_id, &r->tenant,   &r->key_id,         &r->model,
                          &r->site,       &r->endpoint, &r->priority_class, &r->outcome};
  std::size_t f = 1;
  for (std::string* text : texts) {
    if (!ReadText(fields[f++], text)) return false;
  }
  for (std::int64_t* number : {&r->prompt_tokens, &r->completion_tokens, &r->start_unix_ms,
                               &r->end_unix_ms}) {
    if (!ReadNumber(fields[f++], number)) return false;
  }
  for (double* x : {&r->ttft_ms, &r->joules, &r->usd_per_mwh, &r->energy_cost_usd,
                    &r->charged_usd}) {
    if (!ReadNumber(fields[f++], x)) return false;
  }
  return !r->request_id.empty();
}

namespace {

// Reads the segments in `dir` (oldest first) into `rows`; their paths into `paths`. Returns the
// highest segment number seen (-1: none), or an error.
Result<std::int64_t> ReadSegments(const std::filesystem::path& dir, std::vector<LedgerRow>* rows,
                                  std::vector<std::filesystem::path>* paths,
                                  std::size_t* skipped) {
  std::error_code ec;
  std::vector<std::pair<std::int64_t, std::filesystem::path>> found;
  if (!std::filesystem::exists(dir, ec)) return -1;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (const std::int64_t n = SegmentOf(entry.path()); n >= 0) found.emplace_back(n, entry.path());
  }
  if (ec) return std::unexpected("ledger journal: cannot list " + dir.string() + ": " + ec.message());
  std::sort(found.begin(), found.end());
  for (const auto& [n, path] : found) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::unexpected("ledger journal: cannot read " + path.string());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.resize(std::min(text.size(), text.find('\0')));  // a segment's unused tail is zeros.
    LedgerRow row;
    for (std::size_t start = 0; start < text.size();) {
      const std::size_t end = std::min(text.size(), text.find('\n', start));
      if (ParseJournalLine(std::string_view(text).substr(start, end - start), &row)) {
        rows->push_back(row);
      } else {
        ++*skipped;
      }
      start = end + 1;
    }
    paths->push_back(path);
  }
  return found.empty() ? -1 : found.back().first;
}

// Opens (creating) and locks `path` without waiting: the descriptor, or -1 when another open
// description (another writer, in this process or another) holds it.
int TryLock(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

constexpr int kMaxSlots = 256;
constexpr std::string_view kSlotPrefix = "slot-";
constexpr std::string_view kSlotSuffix = ".lock";

// Whether a write into a mapping of a file in `dir` never needs a block that posix_fallocate did
// not already give it: filesystems that overwrite in place.
bool AllocatesInPlace(const std::filesystem::path& dir) {
  struct statfs fs{};
  if (::statfs(dir.c_str(), &fs) != 0) return false;
  switch (static_cast<unsigned long>(fs.f_type)) {
    case 0xEF53:      // ext2, ext3, ext4.
    case 0x58465342:  // XFS.
    case 0x01021994:  // tmpfs.
      return true;
    default:
      return false;
  }
}

}  // namespace

LedgerJournal::Mapping LedgerJournal::MapWhole(const std::filesystem::path& path,
                                               std::size_t bytes) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return {};
  // The whole file's blocks now, so that no copy into the mapping can meet a full disk.
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  void* map = MAP_FAILED;
  if (err == 0) {
    map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) err = errno;
  }
  if (err != 0) {
    ::close(fd);
    std::error_code ignored;
    std::filesystem::remove(path, ignored);  // nothing in it; it would only hold the disk.
    errno = err;
    return {};
  }
  return {fd, static_cast<char*>(map)};
}

Result<std::unique_ptr<LedgerJournal>> LedgerJournal::Open(const std::filesystem::path& dir,
                                                           std::vector<LedgerRow>* leftover,
                                                           std::size_t segment_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return std::unexpected("ledger journal: cannot create " + dir.string() + ": " + ec.message());
  // Several writers may share a state directory (gateways on one SQLite file): each journals in
  // a slot of its own, dir/<n>/, held by an flock on dir/slot-<n>.lock. The lock goes when its
  // process dies, however it dies, so a free slot's segments are rows to replay.
  const auto slot_lock = [&](int n) {
    return dir / (std::string(kSlotPrefix) + std::to_string(n) + std::string(kSlotSuffix));
  };
  int own = -1, own_fd = -1;
  for (int n = 0; n < kMaxSlots && own < 0; ++n) {
    if ((own_fd = TryLock(slot_lock(n))) >= 0) own = n;
  }
  if (own < 0) {
    return std::unexpected("ledger journal: no free slot in " + dir.string() + " (" +
                           std::to_string(kMaxSlots) + " writers, or it is not writable)");
  }
  std::vector<std::filesystem::path> paths;
  std::vector<int> held;  // dead writers' slots, locked while their rows are replayed.
  std::vector<int> earlier = {own};  // slots whose last writers are gone (this one's too).
  std::size_t skipped = 0;
  std::int64_t last = -1;
  for (int n = 0; n < kMaxSlots; ++n) {
    if (n != own) {
      if (!std::filesystem::exists(slot_lock(n), ec)) continue;
      const int fd = TryLock(slot_lock(n));
      if (fd < 0) continue;  // a writer that is running: its rows are its own.
      held.push_back(fd);
      earlier.push_back(n);
    }
    auto read = ReadSegments(dir / std::to_string(n), leftover, &paths, &skipped);
    if (!read) {
      for (int fd : held) ::close(fd);
      ::close(own_fd);
      return std::unexpected(read.error());
    }
    if (n == own) last = *read;
  }
  if (skipped > 0) spdlog::warn("ledger journal: {} lines that are not rows skipped", skipped);
  const std::filesystem::path own_dir = dir / std::to_string(own);
  std::filesystem::create_directories(own_dir, ec);
  if (ec) {
    for (int fd : held) ::close(fd);
    ::close(own_fd);
    return std::unexpected("ledger journal: cannot create " + own_dir.string() + ": " + ec.message());
  }
  std::filesystem::remove(own_dir / kSpareName, ec);  // a spare left by a crash: never a row.
  ec.clear();
  // The first segment is opened by the first append: a writer that never journals (every
  // request waits for its commit) leaves no file.
  std::unique_ptr<LedgerJournal> journal(new LedgerJournal(
      own_dir, std::move(paths), last + 1, segment_bytes, AllocatesInPlace(own_dir)));
  journal->lock_fd_ = own_fd;
  journal->held_fds_ = std::move(held);
  // Each slot's writer names itself in dir/slot-<n>.member: the names of the writers gone, whose
  // rows this one replays, and a new one for this writer, kept while it runs.
  const auto member_file = [&](int n) {
    return dir / (std::string(kSlotPrefix) + std::to_string(n) + ".member");
  };
  for (int n : earlier) {
    std::ifstream in(member_file(n));
    std::string name;
    if (in >> name) journal->earlier_members_.push_back(name);
  }
  auto name = RandomHex(8);
  if (!name) return std::unexpected("ledger journal: " + name.error());
  journal->member_ = "j" + *name;
  std::ofstream out(member_file(own), std::ios::trunc);
  out << journal->member_ << '\n';
  out.close();
  if (!out) spdlog::warn("ledger journal: cannot write {}", member_file(own).string());
  return journal;
}

LedgerJournal::LedgerJournal(std::filesystem::path dir,
                             std::vector<std::filesystem::path> leftovers,
                             std::int64_t first_segment, std::size_t segment_bytes, bool mapped)
    : dir_(std::move(dir)),
      leftovers_(std::move(leftovers)),
      capacity_(segment_bytes),
      mapped_(mapped),
      segment_(first_segment) {}

LedgerJournal::~LedgerJournal() {
  std::lock_guard lock(mu_);
  for (int fd : held_fds_) ::close(fd);
  const bool opened = fd_ >= 0;
  CloseSegment();
  if (spare_.fd >= 0) {
    ::munmap(spare_.map, capacity_);
    ::close(spare_.fd);
    std::error_code ignored;
    std::filesystem::remove(dir_ / kSpareName, ignored);
  }
  // Everything appended reached the database: nothing to replay, so no file is left behind.
  const auto it = counts_.find(segment_);
  if (opened && (it == counts_.end() || it->second.written >= it->second.appended)) {
    std::error_code ignored;
    std::filesystem::remove(SegmentPath(dir_, segment_), ignored);
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // the slot is free for the next writer.
}

void LedgerJournal::DropLeftovers() {
  std::lock_guard lock(mu_);
  for (const auto& path : leftovers_) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  leftovers_.clear();
  // The dead writers' slots whose rows are now in the store are free again.
  for (int fd : held_fds_) ::close(fd);
  held_fds_.clear();
}

bool LedgerJournal::OpenSegment(std::int64_t segment) {
  const std::filesystem::path path = SegmentPath(dir_, segment);
  Mapping opened = mapped_ ? MapWhole(path, capacity_)
                           : Mapping{::open(path.c_str(),
                                            O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC,
                                            0600)};
  if (opened.fd < 0) return false;
  CloseSegment();
  fd_ = opened.fd;
  map_ = opened.map;
  segment_ = segment;
  segment_bytes_ = 0;
  counts_[segment];
  return true;
}

void LedgerJournal::CloseSegment() {
  if (fd_ < 0) return;
  if (mapped_) {
    ::munmap(map_, capacity_);
    // A segment left behind (rows not yet in the database) ends at its last line.
    if (::ftruncate(fd_, static_cast<off_t>(segment_bytes_)) != 0) {
      spdlog::warn("ledger journal: cannot trim segment {}: {}", segment_, std::strerror(errno));
    }
  }
  ::close(fd_);
  fd_ = -1;
  map_ = nullptr;
}

std::int64_t LedgerJournal::Append(const LedgerRow& row) {
  const std::string line = JournalLine(row);
  if (line.size() > capacity_) {
    spdlog::error("ledger journal: the row of {} is larger than a segment", row.request_id);
    return -1;
  }
  std::lock_guard lock(mu_);
  if (fd_ < 0 || segment_bytes_ + line.size() > capacity_) {
    const std::int64_t next = fd_ < 0 ? segment_ : segment_ + 1;
    if (fd_ >= 0 && spare_.fd >= 0 &&
        ::rename((dir_ / kSpareName).c_str(), SegmentPath(dir_, next).c_str()) == 0) {
      // The spare PrepareNext made ready: a rename, no allocation on the request's thread.
      CloseSegment();
      fd_ = std::exchange(spare_.fd, -1);
      map_ = std::exchange(spare_.map, nullptr);
      segment_ = next;
      segment_bytes_ = 0;
      counts_[segment_];
    } else if (!OpenSegment(next)) {
      // Once per failing streak, not per request (a full disk fails every one).
      if (!failing_) {
        spdlog::error("ledger journal: cannot open segment {}: {}; rows wait for their commit",
                      next, std::strerror(errno));
      }
      failing_ = true;
      return -1;
    }
    DropDoneSegments();
  }
  if (mapped_) {
    std::memcpy(map_ + segment_bytes_, line.data(), line.size());
  } else {
    for (std::size_t done = 0; done < line.size();) {
      const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (!failing_) {
          spdlog::error("ledger journal: append of {} failed: {}; rows wait for their commit",
                        row.request_id, std::strerror(errno));
        }
        failing_ = true;
        return -1;
      }
      done += static_cast<std::size_t>(n);
    }
  }
  if (failing_) spdlog::info("ledger journal: appending again");
  failing_ = false;
  segment_bytes_ += line.size();
  ++counts_[segment_].appended;
  return segment_;
}

void LedgerJournal::PrepareNext() {
  {
    std::lock_guard lock(mu_);
    if (!mapped_ || preparing_ || spare_.fd >= 0 || fd_ < 0 || segment_bytes_ < capacity_ / 2) {
      return;
    }
    preparing_ = true;
  }
  // Outside the lock: appends go on meanwhile, and none touches the spare until it is set. When
  // this fails, the append that needs a segment opens its own.
  const Mapping spare = MapWhole(dir_ / kSpareName, capacity_);
  std::lock_guard lock(mu_);
  preparing_ = false;
  spare_ = spare;
}

void LedgerJournal::Written(std::int64_t segment, std::size_t rows) {
  std::lock_guard lock(mu_);
  counts_[segment].written += rows;
  DropDoneSegments();
}

void LedgerJournal::DropDoneSegments() {
  for (auto it = counts_.begin(); it != counts_.end();) {
    if (it->first != segment_ && it->second.written >= it->second.appended) {
      std::error_code ignored;
      std::filesystem::remove(SegmentPath(dir_, it->first), ignored);
      it = counts_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace powerplane::store
