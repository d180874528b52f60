#include "core/route_index.h"

#include <algorithm>
#include <limits>
#include <map>
#include <utility>

namespace powerplane::core {

RouteIndex::RouteIndex(std::span<const Endpoint> endpoints, std::span<const EndpointLoad> loads)
    : group_of_(endpoints.size()),
      context_of_(endpoints.size(), 0.0),
      bucket_of_(endpoints.size()),
      next_(endpoints.size(), -1),
      prev_(endpoints.size(), -1) {
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint32_t> by_key;
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    const Endpoint& e = endpoints[i];
    auto [it, fresh] = by_key.try_emplace({e.site_index, e.model_index},
                                          static_cast<std::uint32_t>(groups_.size()));
    if (fresh) {
      Group g;
      g.site = e.site_index;
      g.model = e.model_index;
      g.gpu = e.gpu.get();
      g.least_hardware_usd_per_hour = e.hardware_usd_per_hour;
      g.least_context_tokens = std::numeric_limits<double>::infinity();
      g.head.fill(-1);
      g.count.fill(0);
      groups_.push_back(g);
    }
    Group& g = groups_[it->second];
    ++g.size;
    if (g.gpu != e.gpu.get()) g.gpu = nullptr;
    g.least_hardware_usd_per_hour = std::min(g.least_hardware_usd_per_hour, e.hardware_usd_per_hour);
    g.most_max_batch = std::max(g.most_max_batch, e.max_batch);
    most_max_batch_ = std::max(most_max_batch_, e.max_batch);
    group_of_[i] = it->second;
    Link(static_cast<std::uint32_t>(i), BucketOf(BatchAfter(e, loads[i])));
  }
  member_begin_.assign(groups_.size() + 1, 0);
  for (std::uint32_t g : group_of_) ++member_begin_[g + 1];
  for (std::size_t g = 0; g < groups_.size(); ++g) member_begin_[g + 1] += member_begin_[g];
  members_.resize(endpoints.size());
  std::vector<std::uint32_t> fill(member_begin_.begin(), member_begin_.end() - 1);
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    members_[fill[group_of_[i]]++] = static_cast<std::uint32_t>(i);
    ++groups_[group_of_[i]].unknown_context;  // context_of_ starts unknown (0).
  }
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    SetContext(static_cast<std::uint32_t>(i), loads[i].mean_context_tokens);
  }
}

void RouteIndex::SetContext(std::uint32_t i, double context_tokens) {
  const double before = context_of_[i];
  if (context_tokens == before) return;
  Group& g = groups_[group_of_[i]];
  context_of_[i] = context_tokens;
  g.unknown_context += (context_tokens <= 0) - (before <= 0);
  if (context_tokens > 0 && context_tokens < g.least_context_tokens) {
    g.least_context_tokens = context_tokens;
  } else if (before > 0 && before <= g.least_context_tokens) {
    // The least may have risen: look again (a group is one model at one site: not many).
    double least = std::numeric_limits<double>::infinity();
    for (std::uint32_t m = member_begin_[group_of_[i]]; m < member_begin_[group_of_[i] + 1]; ++m) {
      const double c = context_of_[members_[m]];
      if (c > 0 && c < least) least = c;
    }
    g.least_context_tokens = least;
  }
}

void RouteIndex::Update(std::uint32_t i, const Endpoint& endpoint, const EndpointLoad& load) {
  SetContext(i, load.mean_context_tokens);
  const int bucket = BucketOf(BatchAfter(endpoint, load));
  if (bucket == bucket_of_[i]) return;
  Unlink(i);
  Link(i, bucket);
}

void RouteIndex::Link(std::uint32_t i, int bucket) {
  Group& g = groups_[group_of_[i]];
  const std::int32_t head = g.head[bucket];
  next_[i] = head;
  prev_[i] = -1;
  if (head >= 0) prev_[head] = static_cast<std::int32_t>(i);
  g.head[bucket] = static_cast<std::int32_t>(i);
  ++g.count[bucket];
  bucket_of_[i] = static_cast<std::uint8_t>(bucket);
}

void RouteIndex::Unlink(std::uint32_t i) {
  Group& g = groups_[group_of_[i]];
  const int bucket = bucket_of_[i];
  if (prev_[i] >= 0) {
    next_[prev_[i]] = next_[i];
  } else {
    g.head[bucket] = next_[i];
  }
  if (next_[i] >= 0) prev_[next_[i]] = prev_[i];
  --g.count[bucket];
  next_[i] = prev_[i] = -1;
}

}  // namespace powerplane::core
