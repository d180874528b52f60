#include "gateway/shared_buckets.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>

namespace powerplane::gateway {

struct SharedBuckets::Header {
  char magic[8];              // kMagic once the table is laid out.
  std::uint32_t slot_bytes;   // sizeof(Slot) and kSlots of the process that made it.
  std::uint32_t slots;
  char boot_id[40];           // the kernel's boot id when it was made.
  pthread_mutex_t mu;         // process-shared, robust.
};

namespace {

constexpr char kMagic[8] = {'P', 'P', 'B', 'U', 'C', 'K', 'T', '1'};

std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

std::string Errno(const std::string& what, const std::filesystem::path& file) {
  return "rate-limit table " + file.string() + ": " + what + ": " + std::strerror(errno);
}

// FNV-1a: where a tenant's probe starts.
std::uint64_t Hash(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

std::expected<std::unique_ptr<SharedBuckets>, std::string> SharedBuckets::Open(
    const std::filesystem::path& file) {
  const std::size_t bytes = sizeof(Header) + kSlots * sizeof(Slot);
  const std::string boot = BootId();
  if (boot.empty()) return std::unexpected("rate-limit table: cannot read the kernel's boot id");
  std::error_code ignored;  // a folder that cannot be made fails the open below, which says so.
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path(), ignored);
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return std::unexpected(Errno("cannot open", file));
  // "rate-limit table FILE: what", with the system's reason when `system` (errno read first).
  auto fail = [&](const std::string& what, bool system = true) {
    auto error = system ? Errno(what, file) : "rate-limit table " + file.string() + ": " + what;
    ::close(fd);  // drops its flock too (nothing mapped).
    return std::unexpected(error);
  };
  // Every process that uses the table holds a shared flock on it for its life. Only a process
  // that gets it exclusively (nobody else uses the table) may lay it out; it then shares it.
  const bool alone = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  if (!alone && ::flock(fd, LOCK_SH) != 0) return fail("cannot lock");
  struct stat st{};
  if (::fstat(fd, &st) != 0) return fail("cannot stat");
  if (st.st_size != 0 && static_cast<std::size_t>(st.st_size) != bytes) {
    // Another layout (another version of powerplane), or not ours: never guessed at.
    return fail("has " + std::to_string(st.st_size) + " bytes, where this version's has " +
                    std::to_string(bytes) + " (remove it once no gateway uses it)",
                false);
  }
  if (st.st_size == 0 && (!alone || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0)) {
    return alone ? fail("cannot size") : fail("empty", false);
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return fail("cannot map");
  auto* header = static_cast<Header*>(map);
  const bool laid_out = std::memcmp(header->magic, kMagic, sizeof kMagic) == 0 &&
                        header->slot_bytes == sizeof(Slot) && header->slots == kSlots;
  const bool this_boot = std::string_view(header->boot_id, strnlen(header->boot_id,
                                                                   sizeof header->boot_id)) == boot;
  if (!laid_out || !this_boot) {
    if (!alone) {
      // In use by a process that laid it out on another boot or host (a shared folder), or by
      // another version: never re-laid out under it.
      ::munmap(map, bytes);
      return fail(std::string("in use with another ") +
                      (laid_out ? "boot id (another host?)" : "layout (another version?)"),
                  false);
    }
    // New, or made before a reboot (its times are from another boot; nobody holds its mutex).
    std::memset(map, 0, bytes);
    header->slot_bytes = sizeof(Slot);
    header->slots = kSlots;
    std::memcpy(header->boot_id, boot.data(), std::min(boot.size(), sizeof header->boot_id));
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&header->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    std::memcpy(header->magic, kMagic, sizeof kMagic);  // last: the table is ready.
  }
  if (alone && ::flock(fd, LOCK_SH) != 0) {  // others may join now.
    ::munmap(map, bytes);
    return fail("cannot share the lock");
  }
  auto table = std::unique_ptr<SharedBuckets>(new SharedBuckets(file, fd, header, bytes));
  table->domain_ = "table:" + boot + ":" + std::to_string(st.st_dev) + ":" +
                   std::to_string(st.st_ino);
  return table;
}

SharedBuckets::SharedBuckets(std::filesystem::path file, int fd, Header* header, std::size_t bytes)
    : file_(std::move(file)), fd_(fd), header_(header), bytes_(bytes) {}

SharedBuckets::~SharedBuckets() {
  ::munmap(header_, bytes_);
  ::close(fd_);  // its shared flock goes with it.
}

SharedBuckets::Slot* SharedBuckets::Lock(const Limits& limits) {
  if (limits.tenant.size() > kMaxIdBytes) return nullptr;
  if (int rc = pthread_mutex_lock(&header_->mu); rc == EOWNERDEAD) {
    // Its holder died mid-update: at worst one bucket's level is off. Carry on.
    spdlog::warn("rate-limit table {}: a process died holding it", file_.string());
    pthread_mutex_consistent(&header_->mu);
  } else if (rc != 0) {
    spdlog::error("rate-limit table {}: cannot lock: {}; this process keeps its own buckets",
                  file_.string(), std::strerror(rc));
    return nullptr;
  }
  auto* slots = reinterpret_cast<Slot*>(reinterpret_cast<char*>(header_) + sizeof(Header));
  const std::uint64_t start = Hash(limits.tenant) % kSlots;
  for (std::size_t probe = 0; probe < kSlots; ++probe) {
    Slot& slot = slots[(start + probe) % kSlots];
    const std::string_view id(slot.id, std::min<std::size_t>(slot.id_bytes, kMaxIdBytes));
    if (slot.used != 0 && id != limits.tenant) continue;
    const bool fresh = slot.used == 0;
    if (fresh) {
      slot.used = 1;
      slot.id_bytes = static_cast<std::uint32_t>(limits.tenant.size());
      std::memcpy(slot.id, limits.tenant.data(), limits.tenant.size());
    }
    // A new slot's buckets start full. A limit that differs from the bucket's, seen in a
    // strictly newer view, resizes it keeping what the last minute used (MinuteBucket::Resize:
    // a lowered limit does not refill it); each bucket on its own.
    if (fresh || limits.version > slot.version) {
      for (auto [bytes, per_minute] : {std::pair{slot.rpm, limits.rpm}, {slot.tpm, limits.tpm}}) {
        core::MinuteBucket bucket;
        std::memcpy(&bucket, bytes, sizeof bucket);
        if (fresh) {
          bucket = core::MinuteBucket(per_minute);
        } else if (bucket.per_minute() != per_minute) {
          bucket.Resize(per_minute, 0);  // as of its last use: the next take refills it.
        }
        std::memcpy(bytes, &bucket, sizeof bucket);
      }
      slot.version = limits.version;
    }
    return &slot;
  }
  pthread_mutex_unlock(&header_->mu);
  if (!warned_full_.exchange(true)) {
    spdlog::warn("rate-limit table {}: all {} slots taken; tenants beyond them keep per-process "
                 "buckets until the next reboot", file_.string(), kSlots);
  }
  return nullptr;
}

void SharedBuckets::Unlock() { pthread_mutex_unlock(&header_->mu); }

}  // namespace powerplane::gateway
