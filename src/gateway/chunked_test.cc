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

namespace powerplane::gateway {
namespace {

TEST(ResponseHeadTest, ReadsWhatTheRelayNeeds) {
  const std::string text =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello";
  ResponseHead head;
  const auto n = ParseResponseHead(text, &head);
  ASSERT_EQ(n, static_cast<std::ptrdiff_t>(text.find("5\r\n")));
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.chunked);
  EXPECT_TRUE(head.keep_alive);
  EXPECT_FALSE(head.content_length);
  // Every prefix short of the blank line is incomplete, not malformed.
  for (std::size_t cut = 0; cut < static_cast<std::size_t>(n); ++cut) {
    EXPECT_EQ(ParseResponseHead(std::string_view(text).substr(0, cut), &head), 0) << cut;
  }
  // Bare LF line ends, HTTP/1.0, a length, a missing reason, case-insensitive names.
  ASSERT_GT(ParseResponseHead("HTTP/1.0 404\ncontent-LENGTH:  12 \nConnection: Keep-Alive\n\n",
                              &head), 0);
  EXPECT_EQ(head.status, 404);
  EXPECT_EQ(head.version, 10u);
  EXPECT_TRUE(head.keep_alive);
  EXPECT_EQ(head.content_length, 12u);
  ASSERT_GT(ParseResponseHead("HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                              &head), 0);
  EXPECT_FALSE(head.keep_alive);
  EXPECT_EQ(head.content_length, 0u);
  // Transfer-Encoding wins over Content-Length; a coding other than chunked: until close.
  ASSERT_GT(ParseResponseHead(
      "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &head), 0);
  EXPECT_TRUE(head.chunked);
  EXPECT_FALSE(head.content_length);
  ASSERT_GT(ParseResponseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &head), 0);
  EXPECT_FALSE(head.chunked);
  EXPECT_FALSE(head.content_length);
  ASSERT_GT(ParseResponseHead("HTTP/1.1 204 No Content\r\n\r\n", &head), 0);
  EXPECT_EQ(head.content_length, 0u);
}

TEST(ResponseHeadTest, RefusesMalformedHeads) {
  ResponseHead head;
  for (const char* bad : {
           "HTTP/2.0 200 OK\r\n\r\n",                       // not HTTP/1.x
           "HTTP/1.1 20 OK\r\n\r\n",                        // two-digit status
           "HTTP/1.1 200OK\r\n\r\n",                        // no space after the status
           "HTTP/1.1 100 Continue\r\n\r\n",                 // 1xx
           "HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",       // field without a colon
           "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",        // field without a name
           "HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",     // obsolete line folding
           "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",  // not a number
           "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",  // too big
           "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",  // conflicting
           "garbage\r\n\r\n",
       }) {
    EXPECT_EQ(ParseResponseHead(bad, &head), -1) << bad;
  }
  // A head that never ends is refused once it passes the bound.
  std::string endless = "HTTP/1.1 200 OK\r\n";
  while (endless.size() < kMaxResponseHeadBytes) endless += "X-Filler: aaaaaaaaaaaaaaaa\r\n";
  EXPECT_EQ(ParseResponseHead(endless, &head), -1);
  EXPECT_EQ(ParseResponseHead(endless.substr(0, 100), &head), 0);
}

}  // namespace
}  // namespace powerplane::gateway
