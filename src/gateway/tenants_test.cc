#include "gateway/tenants.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>

namespace powerplane::gateway {
namespace {

Tenant Named(std::string id) {
  Tenant t;
  t.id = std::move(id);
  return t;
}

TEST(TenantDirectoryTest, AKeyIsKnownByItsHashAlone) {
  TenantDirectory dir;
  dir.Add(Named("acme"), {fleet::Sha256Hex("key-a"), fleet::Sha256Hex("key-b")});
  const Identity a = dir.Authenticate("key-a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a.tenant->id, "acme");
  EXPECT_EQ(a.key_id, "cfg_acme_0");
  EXPECT_EQ(dir.Authenticate("key-b").key_id, "cfg_acme_1");
  EXPECT_FALSE(dir.Authenticate("key-c"));
  EXPECT_FALSE(dir.Authenticate(""));
  EXPECT_FALSE(dir.Authenticate("key-a "));  // one byte more is another key.
}

TEST(TenantDirectoryTest, AHashIsReadInEitherCaseAndANonHashIsLeftOut) {
  TenantDirectory dir;
  std::string upper = fleet::Sha256Hex("key-up");
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  dir.Add(Named("acme"), {upper, "not-a-hash", fleet::Sha256Hex("key-up").substr(1)});
  EXPECT_EQ(dir.size(), 1u);
  EXPECT_TRUE(dir.Authenticate("key-up"));
  auto tenant = dir.Find("acme");
  ASSERT_NE(tenant, nullptr);
  dir.AddKey(tenant, fleet::Sha256Hex("key-new"), "key_123");
  EXPECT_EQ(dir.Authenticate("key-new").key_id, "key_123");
  dir.AddKey(tenant, "zz" + fleet::Sha256Hex("key-new").substr(2), "key_bad");
  EXPECT_EQ(dir.size(), 2u);
}

TEST(Sha256Test, HexAndDigestAgree) {
  // FIPS 180-2's "abc".
  EXPECT_EQ(fleet::Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  fleet::Sha256Digest parsed, hashed;
  ASSERT_TRUE(fleet::ParseSha256Hex(fleet::Sha256Hex("abc"), &parsed));
  ASSERT_TRUE(fleet::Sha256("abc", &hashed));
  EXPECT_EQ(parsed, hashed);
  EXPECT_FALSE(fleet::ParseSha256Hex("ab", &parsed));
  EXPECT_FALSE(fleet::ParseSha256Hex(std::string(64, 'g'), &parsed));
}

}  // namespace
}  // namespace powerplane::gateway
