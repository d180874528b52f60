#pragma once
// Token counts estimated from text, for routing before a tokenizer has seen the request, and for
// the engine emulator's usage. About four characters of English per token (OpenAI's rule of thumb).

#include <cstddef>
#include <string_view>

namespace powerplane::core {

inline int EstimateTokens(std::string_view text) {
  return text.empty() ? 0 : static_cast<int>((text.size() + 3) / 4);
}

// Per-message overhead of the chat format (role markers), in tokens.
inline constexpr int kChatMessageOverheadTokens = 4;

}  // namespace powerplane::core
