#pragma once
// API key text, key ids and hashes. Randomness from OpenSSL's RAND_bytes.

#include <cstddef>
#include <expected>
#include <string>
#include <string_view>

namespace powerplane::store {

// Lower-case hex SHA-256 of `data` (64 characters).
std::string Sha256Hex(std::string_view data);
// True for 64 lower-case hex digits.
bool IsSha256Hex(std::string_view text);
// "pp-" + 40 uniformly random base62 characters (about 238 bits).
std::expected<std::string, std::string> NewKeyText();
// "key_" + 12 random lower-case hex digits.
std::expected<std::string, std::string> NewKeyId();
// 2 x `bytes` random lower-case hex digits.
std::expected<std::string, std::string> RandomHex(std::size_t bytes);

}  // namespace powerplane::store
