// `powerplane keys|tenants` parsed and run as the binary runs them, on a SQLite store in a fresh
// directory.
#include "tenancy_commands.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <limits>
#include <vector>

#include "store/store.h"

namespace powerplane::cli {
namespace {

class TenancyCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (std::filesystem::temp_directory_path() / "pp-cli-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // Runs `powerplane ARGS --data-dir DATA_DIR` (DATA_DIR: the test's directory when empty) and
  // returns its exit status; what it wrote is in out_ and err_ (CLI11's words for a flag it
  // refused in err_).
  int Run(std::vector<std::string> args, std::filesystem::path data_dir = {}) {
    args.insert(args.begin(), "powerplane");
    args.push_back("--data-dir");
    args.push_back((data_dir.empty() ? dir_ : data_dir).string());
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    CLI::App app("powerplane");
    TenancyCommands commands(app);
    try {
      app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      out_.clear();
      err_ = e.what();
      return e.get_exit_code();
    }
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    const int rc = commands.Run();
    out_ = ::testing::internal::GetCapturedStdout();
    err_ = ::testing::internal::GetCapturedStderr();
    return rc;
  }
  std::unique_ptr<store::Store> OpenStore() {
    auto st = store::Store::Open("", dir_);
    EXPECT_TRUE(st) << st.error();
    return st ? std::move(*st) : nullptr;
  }

  std::filesystem::path dir_;
  std::string out_, err_;
};

// The admin API's bounds hold on the command line too: a value beyond them is refused, not
// stored clamped (a --tpm of 10^20 was stored as 2^63 - 1).
TEST_F(TenancyCommandsTest, TenantsAddRefusesLimitsBeyondTheAdminApisBounds) {
  const std::pair<std::string, std::string> refused[] = {{"--tpm", "99999999999999999999"},
                                                         {"--tpm", "1000000000001"},
                                                         {"--rpm", "-1"},
                                                         {"--rpm", "many"},
                                                         {"--latency-target-ms", "86400001"}};
  for (const auto& [flag, value] : refused) {
    EXPECT_NE(Run({"tenants", "add", "--id", "t", flag, value}), 0) << flag << " " << value;
    EXPECT_NE(err_.find(flag), std::string::npos) << err_;
  }
  ASSERT_EQ(Run({"tenants", "add", "--id", "t", "--tpm", "1000000000000", "--rpm", "0"}), 0)
      << err_;
  auto st = OpenStore();
  ASSERT_TRUE(st);
  auto t = st->GetTenant("t");
  ASSERT_TRUE(t && *t);
  EXPECT_EQ((*t)->tpm, 1'000'000'000'000);
}

// `tenants add` of a stored tenant changes only the flags given; the others keep their values.
TEST_F(TenancyCommandsTest, TenantsAddOfAStoredTenantKeepsWhatItIsNotGiven) {
  ASSERT_EQ(Run({"tenants", "add", "--id", "acme", "--jurisdictions", "US,EU", "--class", "batch",
                 "--rpm", "5", "--budget-usd", "2.5", "--budget-period", "month"}),
            0)
      << err_;
  ASSERT_EQ(Run({"tenants", "add", "--id", "acme", "--tpm", "900"}), 0) << err_;
  auto st = OpenStore();
  ASSERT_TRUE(st);
  auto t = st->GetTenant("acme");
  ASSERT_TRUE(t && *t);
  EXPECT_EQ((*t)->jurisdictions, (std::vector<std::string>{"US", "EU"}));
  EXPECT_EQ((*t)->priority_class, "batch");
  EXPECT_EQ((*t)->rpm, 5);
  EXPECT_EQ((*t)->tpm, 900);
  EXPECT_EQ((*t)->budget_usd, 2.5);
  EXPECT_EQ((*t)->budget_period, "month");
  st.reset();
  // Named, a field changes, an empty list included (any jurisdiction).
  ASSERT_EQ(Run({"tenants", "add", "--id", "acme", "--jurisdictions", "", "--rpm", "0"}), 0) << err_;
  st = OpenStore();
  t = st->GetTenant("acme");
  ASSERT_TRUE(t && *t);
  EXPECT_TRUE((*t)->jurisdictions.empty());
  EXPECT_EQ((*t)->rpm, 0);
  EXPECT_EQ((*t)->tpm, 900);
}

// `tenants add`, `keys create` and `keys revoke` are in the audit log as the admin API's are,
// with the actor "cli".
TEST_F(TenancyCommandsTest, ChangesAreAudited) {
  ASSERT_EQ(Run({"tenants", "add", "--id", "acme", "--rpm", "5"}), 0) << err_;
  ASSERT_EQ(Run({"keys", "create", "--tenant", "acme"}), 0) << err_;
  auto st = OpenStore();
  ASSERT_TRUE(st);
  auto keys = st->Keys();
  ASSERT_TRUE(keys && keys->size() == 1u);
  const std::string id = keys->front().id;
  st.reset();
  ASSERT_EQ(Run({"keys", "revoke", id}), 0) << err_;
  st = OpenStore();
  ASSERT_TRUE(st);
  auto audit = st->Audit(0, std::numeric_limits<std::int64_t>::max());
  ASSERT_TRUE(audit) << audit.error();
  ASSERT_EQ(audit->size(), 3u);
  EXPECT_EQ((*audit)[0].action, "tenant.put");
  EXPECT_NE((*audit)[0].detail.find(R"("rpm":5)"), std::string::npos) << (*audit)[0].detail;
  EXPECT_EQ((*audit)[1].action, "key.create");
  EXPECT_EQ((*audit)[1].detail, R"({"id":")" + id + R"(","tenant":"acme"})");
  EXPECT_EQ((*audit)[2].detail, R"({"id":")" + id + R"("})");
  EXPECT_EQ((*audit)[2].action, "key.revoke");
  for (const auto& row : *audit) EXPECT_EQ(row.actor, "cli");
}

// A mistyped --data-dir is refused rather than answered from a new empty store; only `tenants
// add` makes one, and says so.
TEST_F(TenancyCommandsTest, OnlyTenantsAddMakesANewStoreAndSaysSo) {
  const auto missing = dir_ / "nonexist";
  const std::vector<std::vector<std::string>> refused = {{"keys", "list"},
                                                         {"keys", "revoke", "k"},
                                                         {"keys", "create", "--tenant", "t"},
                                                         {"tenants", "list"}};
  for (const auto& args : refused) {
    EXPECT_EQ(Run(args, missing), 2) << args[0] << " " << args[1];
    EXPECT_NE(err_.find("no store at " + (missing / "powerplane.db").string()), std::string::npos)
        << err_;
  }
  EXPECT_FALSE(std::filesystem::exists(missing));
  ASSERT_EQ(Run({"tenants", "add", "--id", "t"}, missing), 0) << err_;
  EXPECT_EQ(err_, "notice: created a new store at " + (missing / "powerplane.db").string() + "\n");
  ASSERT_EQ(Run({"keys", "list"}, missing), 0) << err_;
  EXPECT_EQ(err_, "");
  ASSERT_EQ(Run({"tenants", "add", "--id", "u"}, missing), 0) << err_;
  EXPECT_EQ(err_, "");
}

}  // namespace
}  // namespace powerplane::cli
