// Always-on invariant checks with values in the message (gemma HWY_ASSERT style).
#pragma once

namespace fkv {
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
}  // namespace fkv

#define FKV_CHECK(cond, ...)                                                                       \
  do {                                                                                             \
    if (__builtin_expect(!(cond), 0)) ::fkv::check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)
#ifdef NDEBUG
#define FKV_DCHECK(cond, ...) ((void)0)
#else
#define FKV_DCHECK(cond, ...) FKV_CHECK(cond, __VA_ARGS__)
#endif
