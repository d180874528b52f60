#include "gateway/chunked.h"

#include <gtest/gtest.h>

namespace powerplane::gateway {
namespace {

TEST(BodyDecoderTest, ChunkedAcrossEverySplit) {
  const std::string wire = "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    BodyDecoder d = BodyDecoder::Chunked();
    std::string out;
    std::size_t used = d.Feed(std::string_view(wire).substr(0, cut), &out);
    used += d.Feed(std::string_view(wire).substr(used), &out);
    ASSERT_TRUE(d.done()) << cut;
    EXPECT_FALSE(d.failed());
    EXPECT_EQ(out, "helloabcdefghijklmnopqrstuvwxyz");
    EXPECT_EQ(wire.substr(used), "NEXT") << cut;
  }
}

TEST(BodyDecoderTest, RejectsMalformedChunks) {
  for (const char* bad : {"zz\r\n", "5\r\nhelloXX", "5\nhello", "\r\n", "1234567890123456\r\n"}) {
    BodyDecoder d = BodyDecoder::Chunked();
    std::string out;
    d.Feed(bad, &out);
    EXPECT_TRUE(d.failed()) << bad;
    EXPECT_FALSE(d.done());
  }
}

TEST(BodyDecoderTest, LengthAndUntilClose) {
  BodyDecoder d = BodyDecoder::Length(4);
  std::string out;
  EXPECT_EQ(d.Feed("abcdef", &out), 4u);
  EXPECT_TRUE(d.done());
  EXPECT_EQ(out, "abcd");
  EXPECT_TRUE(BodyDecoder::Length(0).done());

  BodyDecoder u = BodyDecoder::UntilClose();
  out.clear();
  u.Feed("abc", &out);
  EXPECT_FALSE(u.done());
  u.OnClose();
  EXPECT_TRUE(u.done());
  EXPECT_EQ(out, "abc");
}

}  // namespace
}  // namespace powerplane::gateway
