// HttpServer over TLS: a self-signed certificate made at test time, an asio ssl client that
// verifies it, chunked streaming, plain HTTP and silent clients on the TLS port, bad cert files.

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "net/http_server.h"
#include "net/io_pool.h"

namespace powerplane::net {
namespace {

namespace beast = boost::beast;
namespace ssl = asio::ssl;
using Clock = std::chrono::steady_clock;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
constexpr auto kChunkGap = std::chrono::milliseconds(200);

// A self-signed EC P-256 certificate for CN=127.0.0.1, subjectAltName IP:127.0.0.1, valid a day,
// written as PEM to `cert_file` and `key_file`. Returns false on any OpenSSL failure.
bool WriteSelfSignedCert(const std::string& cert_file, const std::string& key_file) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  bool ok = key != nullptr && cert != nullptr;
  ok = ok && X509_set_version(cert, 2) == 1;
  ok = ok && ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) == 1;
  ok = ok && X509_gmtime_adj(X509_getm_notBefore(cert), -60) != nullptr;
  ok = ok && X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600) != nullptr;
  ok = ok && X509_set_pubkey(cert, key) == 1;
  if (ok) {
    X509_NAME* name = X509_get_subject_name(cert);
    ok = X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1,
                                    0) == 1 &&
         X509_set_issuer_name(cert, name) == 1;
  }
  if (ok) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"},
                              std::pair{NID_basic_constraints, "critical,CA:TRUE"},
                              std::pair{NID_subject_key_identifier, "hash"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
      ok = ok && ext != nullptr && X509_add_ext(cert, ext, -1) == 1;
      X509_EXTENSION_free(ext);
    }
  }
  ok = ok && X509_sign(cert, key, EVP_sha256()) > 0;
  if (ok) {
    BIO* out = BIO_new_file(cert_file.c_str(), "w");
    ok = out != nullptr && PEM_write_bio_X509(out, cert) == 1;
    BIO_free(out);
  }
  if (ok) {
    BIO* out = BIO_new_file(key_file.c_str(), "w");
    ok = out != nullptr &&
         PEM_write_bio_PrivateKey(out, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
    BIO_free(out);
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return ok;
}

asio::awaitable<void> Handle(ServerRequest& req, Responder& r) {
  if (req.target() == "/stream") {
    http::response<http::empty_body> h{http::status::ok, 11};
    h.set(http::field::content_type, "text/event-stream");
    co_await r.StartStream(std::move(h));
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (int i = 0; i < 3; ++i) {
      if (i > 0) {
        timer.expires_after(kChunkGap);
        co_await timer.async_wait(kUseTuple);
      }
      co_await r.WriteChunk("data: " + std::to_string(i) + "\n\n");
    }
    co_await r.EndStream();
    co_return;
  }
  co_await r.Send(MakeResponse(
      http::status::ok, "secure " + std::string(req.target()) + " " + req.body(), "text/plain"));
}

// What one client exchange saw.
struct Exchange {
  beast::error_code error;  // the first failure, if any.
  std::vector<Response> responses;
  std::vector<std::string> chunks;             // chunk bodies as they arrived.
  std::vector<Clock::time_point> chunk_times;  // when each arrived.
};

class HttpTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/pp_net_tls_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    cert_file_ = dir_ + "/cert.pem";
    key_file_ = dir_ + "/key.pem";
    ASSERT_TRUE(WriteSelfSignedCert(cert_file_, key_file_));
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void SetUp() override {
    ServerOptions o;
    o.max_body_bytes = 1024;
    o.header_timeout = std::chrono::seconds(1);
    o.tls_cert_file = cert_file_;
    o.tls_key_file = key_file_;
    server_ = std::make_unique<HttpServer>(
        pool_.Executors(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), Handle, o);
    server_->Start();
    pool_.Start();
  }
  void TearDown() override {
    server_->Stop();
    pool_.Stop();
  }

  // A client context that trusts only the test certificate and checks the name 127.0.0.1.
  ssl::context ClientContext() {
    ssl::context ctx(ssl::context::tls_client);
    ctx.load_verify_file(cert_file_);
    ctx.set_verify_mode(ssl::verify_peer);
    return ctx;
  }

  // Sends `requests` over one TLS connection (keep-alive) and reads each answer, recording
  // chunk arrivals. Runs on its own io_context, bounded by 5 s.
  Exchange Https(std::vector<Request> requests, ssl::context& ctx) {
    Exchange out;
    asio::io_context io;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          beast::ssl_stream<beast::tcp_stream> stream(co_await asio::this_coro::executor, ctx);
          stream.set_verify_callback(ssl::host_name_verification("127.0.0.1"));
          auto& tcp_layer = beast::get_lowest_layer(stream);
          tcp_layer.expires_after(std::chrono::seconds(5));
          auto [ec_c] = co_await tcp_layer.async_connect(Endpoint(), kUseTuple);
          if ((out.error = ec_c)) co_return;
          auto [ec_h] = co_await stream.async_handshake(ssl::stream_base::client, kUseTuple);
          if ((out.error = ec_h)) co_return;
          beast::flat_buffer buffer;
          for (auto& req : requests) {
            req.set(http::field::host, "127.0.0.1");
            req.prepare_payload();
            auto [ec_w, nw] = co_await http::async_write(stream, req, kUseTuple);
            if ((out.error = ec_w)) co_return;
            http::response_parser<http::string_body> parser;
            auto on_chunk = [&](std::uint64_t, std::string_view body, beast::error_code&) {
              out.chunks.emplace_back(body);
              out.chunk_times.push_back(Clock::now());
              return body.size();
            };
            parser.on_chunk_body(on_chunk);
            auto [ec_r, nr] = co_await http::async_read(stream, buffer, parser, kUseTuple);
            if ((out.error = ec_r)) co_return;
            out.responses.push_back(parser.release());
          }
          tcp_layer.expires_after(std::chrono::seconds(2));
          co_await stream.async_shutdown(kUseTuple);
        },
        asio::detached);
    io.run_for(std::chrono::seconds(6));
    return out;
  }

  Exchange HttpsGet(std::string target) {
    auto ctx = ClientContext();
    return Https({Request{http::verb::get, target, 11}}, ctx);
  }

  // Connects over plain TCP, sends `bytes` (may be empty) and waits up to `wait` for the server
  // to end the connection. Returns the read's error (timed_out when the server held on) and
  // sets `elapsed`.
  beast::error_code PlainConnect(std::string bytes, std::chrono::seconds wait,
                                 Clock::duration* elapsed) {
    beast::error_code result;
    asio::io_context io;
    const auto start = Clock::now();
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          beast::tcp_stream stream(co_await asio::this_coro::executor);
          stream.expires_after(wait);
          auto [ec_c] = co_await stream.async_connect(Endpoint(), kUseTuple);
          if ((result = ec_c)) co_return;
          if (!bytes.empty()) {
            auto [ec_w, nw] = co_await asio::async_write(stream, asio::buffer(bytes), kUseTuple);
            if ((result = ec_w)) co_return;
          }
          std::array<char, 4096> scratch;
          for (;;) {
            auto [ec_r, nr] = co_await stream.async_read_some(asio::buffer(scratch), kUseTuple);
            if ((result = ec_r)) co_return;
          }
        },
        asio::detached);
    io.run_for(wait + std::chrono::seconds(2));
    *elapsed = Clock::now() - start;
    return result;
  }

  tcp::endpoint Endpoint() const {
    return tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port());
  }

  // Waits (up to 3 s) for the server to have no open connection.
  bool WaitNoConnections() {
    const auto deadline = Clock::now() + std::chrono::seconds(3);
    while (server_->open_connections() != 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return server_->open_connections() == 0;
  }

  static inline std::string dir_, cert_file_, key_file_;
  IoPool pool_{1};
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpTlsTest, HttpsGetVerifiedAgainstTheCertificateKeepsAlive) {
  EXPECT_TRUE(server_->tls());
  auto ctx = ClientContext();
  std::vector<Request> requests;
  requests.emplace_back(http::verb::get, "/a", 11);
  requests.emplace_back(http::verb::post, "/b", 11);
  requests.back().body() = "hello";
  auto x = Https(std::move(requests), ctx);
  ASSERT_FALSE(x.error) << x.error.message();
  ASSERT_EQ(x.responses.size(), 2u);
  EXPECT_EQ(x.responses[0].body(), "secure /a ");
  EXPECT_EQ(x.responses[1].body(), "secure /b hello");
  EXPECT_TRUE(WaitNoConnections());  // the client's close_notify ended the session.
}

TEST_F(HttpTlsTest, ClientThatDoesNotTrustTheCertificateFailsTheHandshake) {
  ssl::context ctx(ssl::context::tls_client);  // no trust anchors at all.
  ctx.set_verify_mode(ssl::verify_peer);
  auto x = Https({Request{http::verb::get, "/", 11}}, ctx);
  EXPECT_TRUE(x.error);
  EXPECT_TRUE(x.responses.empty());
}

TEST_F(HttpTlsTest, RefusesTls11) {
  auto ctx = ClientContext();
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_1_VERSION);
  SSL_CTX_set_max_proto_version(ctx.native_handle(), TLS1_1_VERSION);
  SSL_CTX_set_security_level(ctx.native_handle(), 0);  // let the client offer it at all.
  auto x = Https({Request{http::verb::get, "/", 11}}, ctx);
  EXPECT_TRUE(x.error);
  auto good = HttpsGet("/after");
  ASSERT_FALSE(good.error) << good.error.message();
}

TEST_F(HttpTlsTest, StreamsChunksAsTheyAreProduced) {
  auto x = HttpsGet("/stream");
  ASSERT_FALSE(x.error) << x.error.message();
  ASSERT_EQ(x.responses.size(), 1u);
  EXPECT_EQ(x.responses[0].at(http::field::transfer_encoding), "chunked");
  std::string joined;
  for (const auto& c : x.chunks) joined += c;
  EXPECT_EQ(joined, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
  ASSERT_GE(x.chunks.size(), 3u);
  EXPECT_EQ(x.chunks.front(), "data: 0\n\n");
  // The first chunk arrived while the server was still producing: two gaps before the last.
  EXPECT_GE(x.chunk_times.back() - x.chunk_times.front(),
            2 * kChunkGap - std::chrono::milliseconds(50));
}

TEST_F(HttpTlsTest, OversizedBodyIs413OverTls) {
  Request req{http::verb::post, "/big", 11};
  req.body() = std::string(4096, 'x');
  auto ctx = ClientContext();
  auto x = Https({std::move(req)}, ctx);
  ASSERT_EQ(x.responses.size(), 1u) << x.error.message();
  EXPECT_EQ(x.responses[0].result(), http::status::payload_too_large);
  EXPECT_TRUE(WaitNoConnections());
}

TEST_F(HttpTlsTest, PlainHttpToTheTlsPortIsClosedAndServingGoesOn) {
  Clock::duration elapsed{};
  auto ec =
      PlainConnect("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", std::chrono::seconds(5), &elapsed);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  EXPECT_LT(elapsed, std::chrono::milliseconds(900));  // at once, not at the header timeout.
  auto x = HttpsGet("/next");
  ASSERT_FALSE(x.error) << x.error.message();
  ASSERT_EQ(x.responses.size(), 1u);
  EXPECT_EQ(x.responses[0].body(), "secure /next ");
}

TEST_F(HttpTlsTest, SilentClientIsDroppedAfterTheHeaderTimeout) {
  Clock::duration elapsed{};
  auto ec = PlainConnect("", std::chrono::seconds(5), &elapsed);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  EXPECT_GE(elapsed, std::chrono::milliseconds(900));
  EXPECT_LT(elapsed, std::chrono::seconds(3));
  EXPECT_TRUE(WaitNoConnections());
}

TEST_F(HttpTlsTest, CurlWithTheCertificateAsCa) {
  if (std::system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no curl";
  const std::string command = "curl -sS --max-time 5 --cacert " + cert_file_ +
                              " https://127.0.0.1:" + std::to_string(server_->port()) +
                              "/curl 2>&1";
  std::string output;
  if (std::FILE* p = popen(command.c_str(), "r")) {
    std::array<char, 256> buf;
    while (std::fgets(buf.data(), buf.size(), p)) output += buf.data();
    EXPECT_EQ(pclose(p), 0) << output;
  }
  EXPECT_EQ(output, "secure /curl ");
}

class HttpTlsConfigTest : public HttpTlsTest {
 protected:
  void SetUp() override {}
  void TearDown() override {}
  // The message of the exception a server with these files throws ("" when none).
  std::string ConstructError(std::string cert, std::string key) {
    ServerOptions o;
    o.tls_cert_file = std::move(cert);
    o.tls_key_file = std::move(key);
    try {
      HttpServer s(pool_.Executors(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), Handle,
                   o);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(HttpTlsConfigTest, BadFilesAreNamedInTheError) {
  const std::string missing = dir_ + "/missing.pem";
  EXPECT_NE(ConstructError(missing, key_file_).find(missing), std::string::npos);
  EXPECT_NE(ConstructError(cert_file_, missing).find(missing), std::string::npos);
  const std::string garbage = dir_ + "/garbage.pem";
  std::ofstream(garbage) << "not a certificate\n";
  EXPECT_NE(ConstructError(garbage, key_file_).find(garbage), std::string::npos);
  EXPECT_NE(ConstructError(cert_file_, garbage).find(garbage), std::string::npos);
  // The key is swapped for the certificate: it does not parse as a key.
  EXPECT_NE(ConstructError(cert_file_, cert_file_).find(cert_file_), std::string::npos);
  EXPECT_NE(ConstructError(cert_file_, "").find("both"), std::string::npos);
  EXPECT_EQ(ConstructError(cert_file_, key_file_), "");
}

}  // namespace
}  // namespace powerplane::net
