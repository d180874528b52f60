#include "gateway/shared_buckets.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

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
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return std::unexpected(Errno("cannot open", file));
  // Laid out by one process at a time: the others wait here (the layout takes microseconds).
  if (::flock(fd, LOCK_EX) != 0) {
    auto error = Errno("cannot lock", file);
    ::close(fd);
    return std::unexpected(error);
  }
  auto fail = [&](const std::string& what) {
    auto error = Errno(what, file);
    ::close(fd);  // drops the flock too (nothing mapped).
    return std::unexpected(error);
  };
  struct stat st{};
  if (::fstat(fd, &st) != 0) return fail("cannot stat");
  if (st.st_size != 0 && static_cast<std::size_t>(st.st_size) != bytes) {
    // Another layout (another version of powerplane), or not ours: never guessed at.
    ::close(fd);
    return std::unexpected("rate-limit table " + file.string() + ": has " +
                           std::to_string(st.st_size) + " bytes, where this version's has " +
                           std::to_string(bytes) + " (remove it once no gateway uses it)");
  }
  if (st.st_size == 0 && ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    return fail("cannot size");
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return fail("cannot map");
  auto* header = static_cast<Header*>(map);
  const std::string boot = BootId();
  const bool laid_out = std::memcmp(header->magic, kMagic, sizeof kMagic) == 0 &&
                        header->slot_bytes == sizeof(Slot) && header->slots == kSlots;
  if (!laid_out || std::string_view(header->boot_id) != boot) {
    // New, or made before a reboot (its times are from another boot; nobody holds its mutex).
    std::memset(map, 0, bytes);
    header->slot_bytes = sizeof(Slot);
    header->slots = kSlots;
    std::snprintf(header->boot_id, sizeof header->boot_id, "%s", boot.c_str());
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&header->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    std::memcpy(header->magic, kMagic, sizeof kMagic);  // last: the table is ready.
  }
  // The mapping keeps the open file (and so its flock) alive after close: unlock first.
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return std::unique_ptr<SharedBuckets>(new SharedBuckets(file, header, bytes));
}

SharedBuckets::SharedBuckets(std::filesystem::path file, Header* header, std::size_t bytes)
    : file_(std::move(file)), header_(header), bytes_(bytes) {}

SharedBuckets::~SharedBuckets() { ::munmap(header_, bytes_); }

SharedBuckets::Slot* SharedBuckets::Lock(const Limits& limits) {
  if (limits.tenant.size() > kMaxIdBytes) return nullptr;
  if (int rc = pthread_mutex_lock(&header_->mu); rc == EOWNERDEAD) {
    // Its holder died mid-update: at worst one bucket's level is off. Carry on.
    spdlog::warn("rate-limit table {}: a process died holding it", file_.string());
    pthread_mutex_consistent(&header_->mu);
  } else if (rc != 0) {
    return nullptr;
  }
  auto* slots = reinterpret_cast<Slot*>(reinterpret_cast<char*>(header_) + sizeof(Header));
  const std::uint64_t start = Hash(limits.tenant) % kSlots;
  for (std::size_t probe = 0; probe < kSlots; ++probe) {
    Slot& slot = slots[(start + probe) % kSlots];
    const std::string_view id(slot.id, slot.id_bytes);
    if (slot.used != 0 && id != limits.tenant) continue;
    core::MinuteBucket rpm, tpm;
    std::memcpy(&rpm, slot.rpm, sizeof rpm);
    std::memcpy(&tpm, slot.tpm, sizeof tpm);
    const bool fresh = slot.used == 0;
    const bool changed = rpm.per_minute() != limits.rpm || tpm.per_minute() != limits.tpm;
    if (fresh || (changed && limits.version >= slot.version)) {
      slot.used = 1;
      slot.id_bytes = static_cast<std::uint32_t>(limits.tenant.size());
      std::memcpy(slot.id, limits.tenant.data(), limits.tenant.size());
      slot.version = limits.version;
      const core::MinuteBucket new_rpm(limits.rpm), new_tpm(limits.tpm);
      std::memcpy(slot.rpm, &new_rpm, sizeof new_rpm);
      std::memcpy(slot.tpm, &new_tpm, sizeof new_tpm);
    }
    return &slot;
  }
  pthread_mutex_unlock(&header_->mu);
  return nullptr;  // every slot taken by other tenants.
}

void SharedBuckets::Unlock() { pthread_mutex_unlock(&header_->mu); }

}  // namespace powerplane::gateway
