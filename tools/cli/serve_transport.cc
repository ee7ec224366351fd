// fastkv serve: connections (a thread each), request-size checks, the port probe and API keys.
#include <httplib.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/serve_http.h"
#include "core/parse_number.h"
#include "engine/app.h"
#include "engine/batch.h"
#include "kernels/matmul.h"
#include "kv/method_spec.h"
#include "serve/request.h"
#include "serve/scheduler.h"

namespace fkv::cli::serving {
namespace {

// The token of an "Authorization: Bearer TOKEN" header (the scheme is case-insensitive, RFC
// 7235), or nullopt for another scheme.
std::optional<std::string> bearer_token(const std::string& h) {
  constexpr std::string_view kScheme = "bearer ";
  if (h.size() < kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(h[i])) != kScheme[i]) return std::nullopt;
  }
  // Spaces may follow the scheme; the token itself is taken as sent (a key has no edge spaces,
  // --api-key refuses them, so "KEY " is not the key).
  const size_t begin = h.find_first_not_of(' ', kScheme.size());
  if (begin == std::string::npos) return std::string();
  return h.substr(begin);
}

// Compares every byte whatever the first difference, so the time does not tell how much of a
// guess was right.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return diff == 0;
}

// HTTP connections: one thread each, made on demand up to `max_threads` and kept for reuse; more
// connections wait in FIFO order for a free one. cpp-httplib's fixed pool let idle keep-alive
// connections (each holding its thread up to the keep-alive timeout) starve /health.
class ConnectionThreads : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(size_t max_threads) : max_threads_(std::max<size_t>(1, max_threads)) {}
  ~ConnectionThreads() override { shutdown(); }
  void enqueue(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    tasks_.push_back(std::move(fn));
    // Idle threads that have not yet woken still count as idle: start one more whenever the
    // queued tasks outnumber them.
    if (tasks_.size() > idle_ && threads_.size() < max_threads_) {
      threads_.emplace_back([this] { work(); });
    } else {
      cv_.notify_one();
    }
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ && threads_.empty()) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      --idle_;
      if (tasks_.empty()) return;  // stopping, nothing left to run
      auto fn = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  const size_t max_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stopping_ = false;
};

}  // namespace

bool authorised(ServeContext& ctx, const httplib::Request& req, httplib::Response& res) {
  if (ctx.api_key.empty()) return true;
  const std::string h = req.get_header_value("Authorization");
  if (const auto token = bearer_token(h); token && same_secret(*token, ctx.api_key)) return true;
  ApiError e;
  e.status = 401;
  e.message = h.empty() ? "missing API key: send 'Authorization: Bearer KEY'" : "invalid API key";
  e.code = "invalid_api_key";
  send_error(ctx, res, e);
  return false;
}
// "512M", "2G", "1048576", "64KiB": binary units.
Expected<size_t> parse_size(const std::string& text, const std::string& what) {
  size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
  std::string unit = text.substr(i);
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    mult = uint64_t{1} << 10;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    mult = uint64_t{1} << 20;
  } else if (unit == "G" || unit == "GB" || unit == "GIB") {
    mult = uint64_t{1} << 30;
  } else if (unit == "T" || unit == "TB" || unit == "TIB") {
    mult = uint64_t{1} << 40;
  } else {
    return Status::error(strfmt("%s: '%s' is not a size (digits with an optional K, M, G or T)",
                                what.c_str(), text.c_str()));
  }
  auto n = parse_uint64(text.substr(0, i), what);
  if (!n)
    return Status::error(strfmt("%s: '%s' is not a size (digits with an optional K, M, G or T)",
                                what.c_str(), text.c_str()));
  if (*n > std::numeric_limits<uint64_t>::max() / mult) {
    return Status::error(strfmt("%s: '%s' is too large", what.c_str(), text.c_str()));
  }
  return static_cast<size_t>(*n * mult);
}

httplib::TaskQueue* new_connection_threads(size_t max_threads) {
  return new ConnectionThreads(max_threads);
}

// Whether another socket listens on host:port (bind fails with EADDRINUSE), for a clear error.
bool port_in_use(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return false;
  bool in_use = false;
  for (addrinfo* ai = res; ai != nullptr && !in_use; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) continue;
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno == EADDRINUSE) in_use = true;
    ::close(fd);
  }
  freeaddrinfo(res);
  return in_use;
}

// The Content-Length header of a request with a body, checked before any of the body is read:
// a malformed or repeated value is a 400, one over --max-body a 413 (cpp-httplib itself would
// wait for the body until its read timeout first).
std::optional<ApiError> check_content_length(const httplib::Request& req, size_t max_body) {
  if (!req.has_header("Content-Length")) return std::nullopt;
  ApiError e;
  if (req.get_header_value_count("Content-Length") != 1) {
    e.message = "more than one Content-Length header";
    return e;
  }
  const std::string v = req.get_header_value("Content-Length");
  const bool digits =
      !v.empty() && std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  if (!digits) {
    e.message =
        strfmt("Content-Length %s is not a byte count (decimal digits)", dump(json(v)).c_str());
    return e;
  }
  const size_t first = v.find_first_not_of('0');
  const std::string_view significant =
      first == std::string::npos ? std::string_view("0") : std::string_view(v).substr(first);
  // Over 19 digits cannot fit in 64 bits; any such length is over every --max-body.
  uint64_t n = 0;
  if (significant.size() <= 19) n = std::stoull(std::string(significant));
  if (significant.size() > 19 || n > max_body) {
    e.status = 413;
    e.message = strfmt("Content-Length %s is larger than the server's --max-body %zu bytes",
                       v.c_str(), max_body);
    return e;
  }
  return std::nullopt;
}

}  // namespace fkv::cli::serving
