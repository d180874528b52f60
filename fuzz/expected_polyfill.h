#pragma once
// Fuzz builds only: a minimal stand-in for std::expected / std::unexpected for compilers that
// cannot compile libstdc++'s <expected> (clang < 16 lacks the C++20 "conditionally trivial special
// members" it relies on, so with libstdc++ 12 clang 14 sees no std::expected at all). It is
// force-included (-include) by fuzz/CMakeLists.txt into the fuzzed libraries and the harness when,
// and only when, a test compile shows std::expected is missing; ordinary g++ builds never see it.
// Adding names to namespace std is formally undefined; it is confined to these fuzz binaries so the
// grid sources can keep spelling the standard type. Covers the subset the fuzzed code uses.

#include <version>

#if !defined(__cpp_lib_expected)

#include <cstdlib>
#include <type_traits>
#include <utility>
#include <variant>

namespace std {

template <class E>
class unexpected {
 public:
  template <
      class G = E,
      enable_if_t<!is_same_v<remove_cvref_t<G>, unexpected> && is_constructible_v<E, G>, int> = 0>
  constexpr explicit unexpected(G&& e) : error_(std::forward<G>(e)) {}

  constexpr E& error() & { return error_; }
  constexpr const E& error() const& { return error_; }
  constexpr E&& error() && { return std::move(error_); }

 private:
  E error_;
};

template <class E>
unexpected(E) -> unexpected<E>;

template <class T, class E>
class expected {
 public:
  using value_type = T;
  using error_type = E;

  constexpr expected() requires is_default_constructible_v<T> : storage_(in_place_index<0>) {}

  template <class U = T, enable_if_t<!is_same_v<remove_cvref_t<U>, expected> &&
                                         !is_same_v<remove_cvref_t<U>, unexpected<E>> &&
                                         is_constructible_v<T, U>,
                                     int> = 0>
  constexpr expected(U&& v) : storage_(in_place_index<0>, std::forward<U>(v)) {}

  template <class G>
  constexpr expected(const unexpected<G>& u) : storage_(in_place_index<1>, u.error()) {}
  template <class G>
  constexpr expected(unexpected<G>&& u) : storage_(in_place_index<1>, std::move(u).error()) {}

  constexpr bool has_value() const noexcept { return storage_.index() == 0; }
  constexpr explicit operator bool() const noexcept { return has_value(); }

  constexpr T& value() & { return Get(); }
  constexpr const T& value() const& { return Get(); }
  constexpr T&& value() && { return std::move(Get()); }
  constexpr T& operator*() & { return Get(); }
  constexpr const T& operator*() const& { return Get(); }
  constexpr T&& operator*() && { return std::move(Get()); }
  constexpr T* operator->() { return &Get(); }
  constexpr const T* operator->() const { return &Get(); }

  constexpr E& error() & { return GetError(); }
  constexpr const E& error() const& { return GetError(); }
  constexpr E&& error() && { return std::move(GetError()); }

  template <class U>
  constexpr T value_or(U&& fallback) const& {
    return has_value() ? Get() : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  // Misuse is a bug in the fuzzed code: crash loudly so the fuzzer reports it.
  constexpr T& Get() {
    if (!has_value()) std::abort();
    return *std::get_if<0>(&storage_);
  }
  constexpr const T& Get() const {
    if (!has_value()) std::abort();
    return *std::get_if<0>(&storage_);
  }
  constexpr E& GetError() {
    if (has_value()) std::abort();
    return *std::get_if<1>(&storage_);
  }
  constexpr const E& GetError() const {
    if (has_value()) std::abort();
    return *std::get_if<1>(&storage_);
  }

  variant<T, E> storage_;
};

// expected<void, E>: success carries nothing.
template <class E>
class expected<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  constexpr expected() = default;
  template <class G>
  constexpr expected(const unexpected<G>& u) : error_(u.error()), has_error_(true) {}
  template <class G>
  constexpr expected(unexpected<G>&& u) : error_(std::move(u).error()), has_error_(true) {}

  constexpr bool has_value() const noexcept { return !has_error_; }
  constexpr explicit operator bool() const noexcept { return has_value(); }
  constexpr void value() const {
    if (has_error_) std::abort();
  }
  constexpr void operator*() const noexcept {}

  constexpr E& error() & { return GetError(); }
  constexpr const E& error() const& { return GetError(); }
  constexpr E&& error() && { return std::move(GetError()); }

 private:
  constexpr E& GetError() {
    if (!has_error_) std::abort();
    return error_;
  }
  constexpr const E& GetError() const {
    if (!has_error_) std::abort();
    return error_;
  }

  E error_{};
  bool has_error_ = false;
};

}  // namespace std

#endif  // !defined(__cpp_lib_expected)
