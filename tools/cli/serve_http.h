// fastkv serve's HTTP side, split by concern (the engine-side scheduler and request validation
// are src/serve/):
//   serve.cc            options, routes and start-up (cmd_serve)
//   serve_respond.cc    one completion request: admission, then a streamed (SSE) or collected
//   answer serve_transport.cc  connections, Content-Length and size checks, the port probe, API
//   keys serve_metrics.cc    /metrics in Prometheus text
// Design: docs/SERVING.md.
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/status.h"
#include "serve/request.h"
#include "serve/scheduler.h"

namespace fkv::cli::serving {

// The engine-side names every serve file uses.
using json = nlohmann::json;
using serve::ApiError;
using serve::bad;
using serve::dump;
using serve::error_json;
using serve::Job;
using serve::Parsed;
using serve::Scheduler;

// The request side's context (model, tokenizer, defaults) and the HTTP side's state.
struct ServeContext : serve::RequestContext {
  serve::Scheduler* scheduler = nullptr;
  std::string model_id;
  std::string api_key;
  std::atomic<uint64_t> next_id{1};
  std::atomic<int> open_responses{0};
  // Prometheus counters of the HTTP side.
  std::atomic<uint64_t> http_ok{0}, http_4xx{0}, http_5xx{0}, rejected_queue_full{0};
};

// Bounds on what one connection can hold (docs/SERVING.md, "Bounds"): an idle keep-alive
// connection is closed after kKeepAliveIdleSeconds; a read or write that makes no progress for
// its timeout ends the connection.
constexpr int kKeepAliveIdleSeconds = 5;
constexpr int kReadTimeoutSeconds = 10;
constexpr int kWriteTimeoutSeconds = 10;

// The error as an OpenAI error body with its status; the second form also counts it in the
// context's 4xx / 5xx counters.
void send_error(httplib::Response& res, const serve::ApiError& e);
void send_error(ServeContext& ctx, httplib::Response& res, const serve::ApiError& e);

// POST /v1/completions (chat false) or /v1/chat/completions: authorisation, validation,
// admission (503 when the queue is full or the server stops), then the answer.
void handle_completion(ServeContext& ctx, bool chat, const httplib::Request& req,
                       httplib::Response& res);
// Whether the request carries the server's API key (always, without --api-key); a 401 otherwise.
bool authorised(ServeContext& ctx, const httplib::Request& req, httplib::Response& res);
// The /metrics page.
std::string metrics_text(ServeContext& ctx);

// "512M", "2G", "1048576", "64KiB": binary units; errors name `what` and the text.
Expected<size_t> parse_size(const std::string& text, const std::string& what);
// The server's connection task queue (see serve_transport.cc): one thread per connection, up to
// max_threads.
httplib::TaskQueue* new_connection_threads(size_t max_threads);
// Whether another socket listens on host:port, for a clear start-up error.
bool port_in_use(const std::string& host, int port);
// The Content-Length of a request with a body, checked before the body is read: 400 / 413.
std::optional<serve::ApiError> check_content_length(const httplib::Request& req, size_t max_body);

}  // namespace fkv::cli::serving
