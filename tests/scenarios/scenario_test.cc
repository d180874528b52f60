// Runs every tests/scenarios/*.scenario against the core Router (format: README.md in this folder).

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/route_index.h"
#include "core/router.h"
#include "engine/gpu_profiles.h"

namespace powerplane {
namespace {
namespace fs = std::filesystem;

std::map<std::string, std::string> Args(std::istringstream& in) {
  std::map<std::string, std::string> out;
  std::string word;
  while (in >> word) {
    auto eq = word.find('=');
    if (eq == std::string::npos) {
      out[word] = "";
    } else {
      out[word.substr(0, eq)] = word.substr(eq + 1);
    }
  }
  return out;
}

class Scenario {
 public:
  void Run(const fs::path& file) {
    std::ifstream in(file);
    ASSERT_TRUE(in) << file;
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
      std::istringstream words(line);
      std::string verb;
      if (!(words >> verb)) continue;
      SCOPED_TRACE(file.filename().string() + ":" + std::to_string(number) + ": " + line);
      if (verb == "site") {
        std::string id;
        words >> id;
        auto a = Args(words);
        sites_.push_back({id, a["jurisdiction"], Num(a, "pue", 1.2), Num(a, "rtt_ms", 0) / 1e3});
        energy_.push_back({Num(a, "price", 0)});
        per_site_.push_back(0);
      } else if (verb == "endpoint") {
        std::string site;
        words >> site;
        auto a = Args(words);
        core::Endpoint e;
        const auto s = SiteIndex(site);
        ASSERT_GE(s, 0) << "unknown site " << site;
        e.id = site + "/" + std::to_string(per_site_[s]++);
        e.site_index = static_cast<std::uint32_t>(s);
        e.model_index = Model(a.contains("model") ? a["model"] : "llama-3.1-8b");
        e.gpu = Gpu(a.contains("gpu") ? a["gpu"] : "h200");
        e.max_batch = static_cast<int>(Num(a, "max_batch", 256));
        e.max_queue = static_cast<int>(Num(a, "max_queue", 256));
        e.kv_token_capacity = static_cast<std::int64_t>(Num(a, "kv_tokens", 0));
        e.hardware_usd_per_hour = Num(a, "hw_usd_h", 2.0);
        endpoints_.push_back(e);
        loads_.push_back({});
        ApplyLoad(loads_.back(), a);
      } else if (verb == "price") {
        std::string assignment;
        words >> assignment;
        auto eq = assignment.find('=');
        const auto s = SiteIndex(assignment.substr(0, eq));
        ASSERT_GE(s, 0);
        energy_[s].usd_per_mwh = std::stod(assignment.substr(eq + 1));
      } else if (verb == "load") {
        std::string id;
        words >> id;
        auto a = Args(words);
        bool found = false;
        for (std::size_t i = 0; i < endpoints_.size(); ++i) {
          if (endpoints_[i].id == id) {
            loads_[i] = {};
            ApplyLoad(loads_[i], a);
            found = true;
          }
        }
        ASSERT_TRUE(found) << "unknown endpoint " << id;
      } else if (verb == "request") {
        auto a = Args(words);
        request_ = {};
        jurisdictions_.clear();
        request_.model_index = Model(a.contains("model") ? a["model"] : "llama-3.1-8b");
        request_.prompt_tokens = static_cast<int>(Num(a, "prompt", 500));
        request_.expected_output_tokens = static_cast<int>(Num(a, "output", 200));
        request_.ttft_target_s = Num(a, "ttft_ms", 1000) / 1e3;
        request_.tpot_target_s = Num(a, "tpot_ms", 100) / 1e3;
        if (a.contains("jurisdictions")) {
          std::istringstream list(a["jurisdictions"]);
          std::string j;
          while (std::getline(list, j, ',')) jurisdictions_.push_back(j);
        }
        request_.allowed_jurisdictions = jurisdictions_;
      } else if (verb == "expect") {
        auto a = Args(words);
        core::FleetView view{sites_, energy_, endpoints_, loads_};
        core::Decision d = core::Router().Route(request_, view);
        const std::string why = d.Explain(view);
        // The fleet routes through a RouteIndex: it must choose the same.
        const core::RouteIndex index(endpoints_, loads_);
        core::FleetView indexed = view;
        indexed.index = &index;
        const core::Decision di = core::Router().Route(request_, indexed);
        EXPECT_EQ(di.placed, d.placed) << why;
        EXPECT_EQ(di.why_not, d.why_not) << why;
        if (d.placed) {
          EXPECT_EQ(di.endpoint_index, d.endpoint_index) << why;
        }
        if (a.contains("none")) {
          EXPECT_FALSE(d.placed) << why;
          EXPECT_EQ(core::ToString(d.why_not), a["none"]) << why;
          continue;
        }
        ASSERT_TRUE(d.placed) << why;
        if (a.contains("site")) {
          EXPECT_EQ(sites_[d.site_index].id, a["site"]) << why;
        }
        if (a.contains("endpoint")) {
          EXPECT_EQ(endpoints_[d.endpoint_index].id, a["endpoint"]) << why;
        }
        if (a.contains("meets")) {
          EXPECT_EQ(d.meets_targets, a["meets"] == "true") << why;
        }
      } else {
        FAIL() << "unknown verb '" << verb << "'";
      }
    }
  }

 private:
  static double Num(std::map<std::string, std::string>& a, const std::string& k, double def) {
    return a.contains(k) ? std::stod(a[k]) : def;
  }
  static void ApplyLoad(core::EndpointLoad& l, std::map<std::string, std::string>& a) {
    l.running = static_cast<int>(Num(a, "running", 0));
    l.waiting = static_cast<int>(Num(a, "waiting", 0));
    l.kv_tokens_used = static_cast<std::int64_t>(Num(a, "kv_used", 0));
    l.healthy = !a.contains("healthy") || a["healthy"] == "true";
  }
  int SiteIndex(const std::string& id) const {
    for (std::size_t i = 0; i < sites_.size(); ++i) {
      if (sites_[i].id == id) return static_cast<int>(i);
    }
    return -1;
  }
  std::uint32_t Model(const std::string& name) {
    for (std::size_t i = 0; i < models_.size(); ++i) {
      if (models_[i] == name) return static_cast<std::uint32_t>(i);
    }
    models_.push_back(name);
    return static_cast<std::uint32_t>(models_.size() - 1);
  }
  std::shared_ptr<const core::GpuModel> Gpu(const std::string& name) {
    auto& g = gpus_[name];
    if (!g) {
      auto p = engine::LoadGpuProfile(name, PP_SOURCE_DIR "/data");
      EXPECT_TRUE(p) << p.error();
      if (p) g = std::make_shared<const core::GpuModel>(std::move(*p));
    }
    return g;
  }

  std::vector<core::Site> sites_;
  std::vector<core::EnergyState> energy_;
  std::vector<core::Endpoint> endpoints_;
  std::vector<core::EndpointLoad> loads_;
  std::vector<int> per_site_;
  std::vector<std::string> models_;
  std::map<std::string, std::shared_ptr<const core::GpuModel>> gpus_;
  std::vector<std::string> jurisdictions_;
  core::Request request_;
};

std::vector<std::string> ScenarioFiles() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(PP_SOURCE_DIR "/tests/scenarios")) {
    if (e.path().extension() == ".scenario") out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class ScenarioTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScenarioTest, Runs) { Scenario().Run(fs::path(PP_SOURCE_DIR "/tests/scenarios") / GetParam()); }

INSTANTIATE_TEST_SUITE_P(Files, ScenarioTest, ::testing::ValuesIn(ScenarioFiles()),
                         [](const auto& param_info) {
                           const std::string& file = param_info.param;
                           std::string name = file.substr(0, file.size() - 9);
                           for (auto& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace powerplane
