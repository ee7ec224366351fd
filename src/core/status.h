// Status / Expected: errors the user can cause (files, JSON, flags). Invariants use FKV_CHECK.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "core/check.h"

namespace fkv {

class Status {
 public:
  static Status ok() { return Status(); }
  static Status error(std::string msg) { return Status(std::move(msg)); }
  bool is_ok() const { return !failed_; }
  explicit operator bool() const { return !failed_; }
  const std::string& message() const { return msg_; }

 private:
  Status() = default;
  explicit Status(std::string m) : msg_(std::move(m)), failed_(true) {}
  std::string msg_;
  bool failed_ = false;
};

// std::expected is C++23; this is the small stand-in.
template <class T>
class Expected {
 public:
  Expected(T v) : value_(std::move(v)) {}  // NOLINT: implicit by design
  Expected(Status s) : status_(std::move(s)) {
    FKV_CHECK(!status_.is_ok(), "Expected constructed from an ok Status");
  }
  bool has_value() const { return value_.has_value(); }
  explicit operator bool() const { return value_.has_value(); }
  T& value() & {
    FKV_CHECK(value_.has_value(), "%s", status_.message().c_str());
    return *value_;
  }
  const T& value() const& {
    FKV_CHECK(value_.has_value(), "%s", status_.message().c_str());
    return *value_;
  }
  T&& value() && {
    FKV_CHECK(value_.has_value(), "%s", status_.message().c_str());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const Status& status() const { return status_; }
  const std::string& error() const { return status_.message(); }

 private:
  std::optional<T> value_;
  Status status_ = Status::ok();
};

// printf-style formatting into std::string.
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

#define FKV_RETURN_IF_ERROR(expr)         \
  do {                                    \
    ::fkv::Status fkv_st_ = (expr);       \
    if (!fkv_st_.is_ok()) return fkv_st_; \
  } while (0)

}  // namespace fkv
