#pragma once
// An index of the fleet kept beside its loads, so the router need not visit every endpoint.
//
// Endpoints are grouped by site and model; within a group each endpoint is filed in one of
// kBuckets lists by the batch a new request would join there (running + waiting + 1, capped at
// its max_batch). The router bounds the cost of a whole (group, bucket) cell from the site's
// price and the bucket's batches, then visits only the cells whose bound could still beat the
// best candidate found (router.cc). Whoever owns the loads calls Update after each change; the
// index is O(1) per update and holds no pointers into the loads. Pure: no I/O, clocks or threads.

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "core/types.h"

namespace powerplane::core {

class RouteIndex {
 public:
  static constexpr int kBuckets = 16;
  static constexpr int kBucketWidth = 16;  // batches per bucket; the last takes the rest.

  // The batch a new request would join at an endpoint with this load.
  static int BatchAfter(const Endpoint& e, const EndpointLoad& load) {
    const int batch = load.running + load.waiting + 1;
    return batch < e.max_batch ? batch : e.max_batch;
  }
  static int BucketOf(int batch) {
    const int b = batch / kBucketWidth;
    return b < kBuckets - 1 ? b : kBuckets - 1;
  }

  // The endpoints of one model at one site.
  struct Group {
    std::uint32_t site = 0;
    std::uint32_t model = 0;
    int size = 0;
    // The GPU model every endpoint of the group has; null when they differ.
    const GpuModel* gpu = nullptr;
    double least_hardware_usd_per_hour = 0;
    int most_max_batch = 0;
    // The least known mean context of the running sequences of its endpoints (infinity when
    // none is known), and how many endpoints do not know theirs (mean_context_tokens <= 0).
    double least_context_tokens = 0;
    int unknown_context = 0;
    std::array<std::int32_t, kBuckets> head;   // first endpoint of each bucket; -1 = none.
    std::array<std::int32_t, kBuckets> count;  // endpoints in each bucket.
  };

  RouteIndex() = default;
  // Indexes `endpoints` at `loads` (parallel spans). Endpoints may come in any order.
  RouteIndex(std::span<const Endpoint> endpoints, std::span<const EndpointLoad> loads);

  // Refiles endpoint `i` after its load changed.
  void Update(std::uint32_t i, const Endpoint& endpoint, const EndpointLoad& load);

  std::span<const Group> groups() const { return groups_; }
  // The endpoints of group g.
  std::span<const std::uint32_t> members(std::size_t g) const {
    return std::span<const std::uint32_t>(members_).subspan(
        member_begin_[g], member_begin_[g + 1] - member_begin_[g]);
  }
  // The next endpoint in the same bucket list; -1 at the end.
  std::int32_t next(std::uint32_t i) const { return next_[i]; }
  std::size_t endpoint_count() const { return next_.size(); }
  // The largest max_batch of any endpoint (the top of the last bucket).
  int most_max_batch() const { return most_max_batch_; }

 private:
  void Link(std::uint32_t i, int bucket);
  void Unlink(std::uint32_t i);
  void SetContext(std::uint32_t i, double context_tokens);

  std::vector<Group> groups_;
  std::vector<std::uint32_t> group_of_;
  // Each group's endpoints, contiguous: members_[member_begin_[g], member_begin_[g + 1]).
  std::vector<std::uint32_t> members_;
  std::vector<std::uint32_t> member_begin_;
  std::vector<double> context_of_;
  std::vector<std::uint8_t> bucket_of_;
  std::vector<std::int32_t> next_;
  std::vector<std::int32_t> prev_;
  int most_max_batch_ = 0;
};

}  // namespace powerplane::core
