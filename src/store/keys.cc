#include "store/keys.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <vector>

namespace powerplane::store {
namespace {

constexpr std::string_view kHex = "0123456789abcdef";
constexpr std::string_view kBase62 =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

std::string ToHex(const unsigned char* bytes, std::size_t n) {
  std::string hex;
  hex.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    hex += kHex[bytes[i] >> 4];
    hex += kHex[bytes[i] & 0xf];
  }
  return hex;
}

}  // namespace

std::string Sha256Hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    return {};
  }
  return ToHex(digest.data(), length);
}

bool IsSha256Hex(std::string_view text) {
  return text.size() == 64 && text.find_first_not_of(kHex) == std::string_view::npos;
}

std::expected<std::string, std::string> NewKeyText() {
  constexpr std::size_t kLength = 40;
  std::string key = "pp-";
  std::array<unsigned char, 64> bytes{};
  while (key.size() < 3 + kLength) {
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
      return std::unexpected("RAND_bytes failed");
    }
    for (unsigned char b : bytes) {
      // 248 = 4 x 62: rejecting the top 8 byte values keeps every character equally likely.
      if (b < 248 && key.size() < 3 + kLength) key += kBase62[b % 62];
    }
  }
  return key;
}

std::expected<std::string, std::string> RandomHex(std::size_t bytes) {
  std::vector<unsigned char> random(bytes);
  if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) {
    return std::unexpected("RAND_bytes failed");
  }
  return ToHex(random.data(), random.size());
}

std::expected<std::string, std::string> NewKeyId() {
  auto hex = RandomHex(6);
  if (!hex) return hex;
  return "key_" + *hex;
}

}  // namespace powerplane::store
