#pragma once
// Requests- and tokens-per-minute buckets shared by the gateway processes of one host (several
// processes on one port with --reuse-port): a table in a memory-mapped file, one slot per
// tenant, guarded by a process-shared robust mutex in the file itself. Every process that opens
// the same file takes from the same buckets, so a tenant's limit holds for the port, not for each
// process. (Gateways on other hosts keep their own; see docs/architecture.md.)
//
// Every process using the table holds a shared flock on its file; the file is laid out only by a
// process that gets it exclusively (nobody else uses it): when new, and again after a reboot
// (the kernel's boot id is in its header), because the buckets' times are CLOCK_MONOTONIC
// seconds, which every process of a host shares and a reboot restarts. A table in use with
// another boot id (a folder shared between hosts) or another layout is refused, never re-laid
// out under its users. A process that dies holding the mutex leaves it to the next locker
// (EOWNERDEAD), which carries on with the table as it is; one that is stopped (SIGSTOP, a
// debugger) while holding it stalls the others' admissions until it runs again.
//
// A bucket whose limit no longer matches the tenant's is resized (keeping what the last minute
// used), but only by a process whose view of the tenant is newer than the one that last did
// (Tenant::version): two processes that see a limit change a few hundred milliseconds apart must
// not resize the bucket back and forth between the two. Slots are not freed before a reboot: past kSlots tenants, the rest keep
// per-process buckets (logged once).

#include <atomic>
#include <cstdint>
#include <cstring>
#include <expected>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "core/limits.h"

namespace powerplane::gateway {

class SharedBuckets {
 public:
  static constexpr std::size_t kSlots = 4096;
  static constexpr std::size_t kMaxIdBytes = 96;

  // Opens (or makes) the table in `file` (its folder too).
  static std::expected<std::unique_ptr<SharedBuckets>, std::string> Open(
      const std::filesystem::path& file);
  ~SharedBuckets();
  SharedBuckets(const SharedBuckets&) = delete;
  SharedBuckets& operator=(const SharedBuckets&) = delete;

  // The tenant's limits as one process sees them.
  struct Limits {
    std::string_view tenant;
    double rpm = 0;
    double tpm = 0;
    std::int64_t version = 0;  // of the tenant's record; newer views win (see above).
  };

  // Runs `use(rpm_bucket, tpm_bucket)` on the tenant's shared buckets, under the table's lock.
  // False (and `use` not run) when the tenant has no slot and none is free, or its id is longer
  // than kMaxIdBytes: the caller keeps that tenant's buckets itself.
  template <typename Use>
  bool With(const Limits& limits, Use&& use) {
    Slot* slot = Lock(limits);
    if (slot == nullptr) return false;
    struct Unlocker {
      SharedBuckets* table;
      ~Unlocker() { table->Unlock(); }  // also when `use` throws: never left held.
    } unlocker{this};
    core::MinuteBucket rpm, tpm;
    std::memcpy(&rpm, slot->rpm, sizeof rpm);
    std::memcpy(&tpm, slot->tpm, sizeof tpm);
    use(rpm, tpm);
    std::memcpy(slot->rpm, &rpm, sizeof rpm);
    std::memcpy(slot->tpm, &tpm, sizeof tpm);
    return true;
  }

  const std::filesystem::path& file() const { return file_; }
  // The same for every process that opened this table on this host since it booted: its boot
  // id and the file's device and inode (core/fleet_usage.h's domain).
  const std::string& domain() const { return domain_; }

 private:
  static_assert(std::is_trivially_copyable_v<core::MinuteBucket>);
  // One tenant's buckets, as laid out in the file (the buckets as their bytes).
  struct Slot {
    std::uint32_t used;  // 0: free.
    std::uint32_t id_bytes;
    char id[kMaxIdBytes];
    std::int64_t version;
    alignas(8) unsigned char rpm[sizeof(core::MinuteBucket)];
    alignas(8) unsigned char tpm[sizeof(core::MinuteBucket)];
  };
  struct Header;
  SharedBuckets(std::filesystem::path file, int fd, Header* header, std::size_t bytes);
  Slot* Lock(const Limits& limits);  // nullptr: no slot (and the lock not held).
  void Unlock();

  std::filesystem::path file_;
  std::string domain_;
  int fd_;  // holds a shared flock for this table's life.
  Header* header_;
  std::size_t bytes_;
  std::atomic<bool> warned_full_{false};
};

}  // namespace powerplane::gateway
