// fastkv serve: an OpenAI-compatible HTTP server (cpp-httplib) over the batched engine step; this
// file holds its options, routes and start-up. HTTP threads validate a request (serve/request.h),
// turn it into a Job and stream its tokens (serve_respond.cc); one scheduler thread owns the model
// and runs the steps (serve/scheduler.h). The other HTTP pieces: serve_http.h. Design:
// docs/SERVING.md.
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

namespace fkv::cli {
namespace serving {

void send_error(httplib::Response& res, const serve::ApiError& e) {
  res.status = e.status;
  res.set_content(serve::dump(serve::error_json(e)), "application/json");
}

void send_error(ServeContext& ctx, httplib::Response& res, const serve::ApiError& e) {
  (e.status >= 500 ? ctx.http_5xx : ctx.http_4xx).fetch_add(1);
  send_error(res, e);
}

}  // namespace serving

namespace {

using namespace serving;  // NOLINT: the server's own pieces

const std::vector<ArgSpec>& serve_specs() {
  static const std::vector<ArgSpec> specs = [] {
    std::vector<ArgSpec> s = {
        {"model", ArgKind::kString, "model folder (HF layout), .gguf file, or a known short name"},
        {"host", ArgKind::kString, "address to bind (default 127.0.0.1: loopback only)"},
        {"port", ArgKind::kInt, "TCP port (default 8080; 0 picks a free one and prints it)"},
        {"parallel", ArgKind::kInt, "sequences decoded together at most (default 4)"},
        {"queue", ArgKind::kInt,
         "requests waiting for admission at most; more get 503 (default 64)"},
        {"kv-memory", ArgKind::kString,
         "bound on the KV-cache bytes of all admitted requests, e.g. 512M, 2G (default 1G; 0 = "
         "none)"},
        {"api-key", ArgKind::kString, "require 'Authorization: Bearer KEY' on the /v1 endpoints"},
        {"threads", ArgKind::kInt, "worker threads (default: all cores)"},
        {"max-body", ArgKind::kString, "largest request body accepted (default 4M)"},
        {"prefill-chunk", ArgKind::kInt,
         "rows x layers of prefill run between two decode steps (default 512; at least one layer)"},
        {"default-max-tokens", ArgKind::kInt,
         "max_tokens when a request gives none (default 256, capped by the context)"},
        {"model-name", ArgKind::kString,
         "the id /v1/models reports (default: the model file name)"},
        {"max-connections", ArgKind::kInt,
         "HTTP connections served at once, idle keep-alive ones included (default 1024); more "
         "wait for a free one"},
    };
    for (const ArgSpec& m : method_arg_specs()) s.push_back(m);
    return s;
  }();
  return specs;
}

}  // namespace

int cmd_serve(const std::vector<std::string>& args) {
  const char* usage =
      "usage: fastkv serve --model PATH|NAME [--host 127.0.0.1] [--port 8080] [--parallel N]\n"
      "         [--queue N] [--kv-memory SIZE] [--api-key KEY] [--threads N]\n"
      "         [--method SPEC [method options]]\n\n"
      "OpenAI-compatible server: POST /v1/completions, POST /v1/chat/completions (stream or not),\n"
      "GET /v1/models[/ID], /health, /metrics. --method is the default KV method; a request may "
      "choose\n"
      "its own with \"kv_compression\": {\"method\": \"fastkv\", \"tsp_rate\": 0.2} or a spec "
      "string.\n"
      "SIGTERM (or SIGINT) stops admitting, finishes what is queued and running, and exits 0.";
  if (wants_help(args)) {
    print_help(usage, serve_specs());
    return 0;
  }
  auto pa = parse_args(args, serve_specs(), "serve");
  if (!pa) return fail(pa.status());
  if (!pa->has("model")) return fail(Status::error("serve: missing --model PATH"));
  auto port = get_int(*pa, "port", 8080, 0, 65535);
  if (!port) return fail(port.status());
  auto parallel = get_int(*pa, "parallel", 4, 1, 1024);
  if (!parallel) return fail(parallel.status());
  auto queue = get_int(*pa, "queue", 64, 1, 100000);
  if (!queue) return fail(queue.status());
  auto chunk = get_int(*pa, "prefill-chunk", 512, 1, 1 << 30);
  if (!chunk) return fail(chunk.status());
  auto default_max = get_int(*pa, "default-max-tokens", 256, 1, 1 << 30);
  if (!default_max) return fail(default_max.status());
  auto kv_memory = parse_size(pa->str("kv-memory", "1G"), "--kv-memory");
  if (!kv_memory) return fail(kv_memory.status());
  auto max_body = parse_size(pa->str("max-body", "4M"), "--max-body");
  if (!max_body) return fail(max_body.status());
  if (*max_body == 0) return fail(Status::error("--max-body must be positive"));
  if (pa->has("api-key")) {
    // An empty key (say, from an unset variable) would silently serve without one, and a header
    // value cannot carry edge spaces or control characters, so such a key could never match.
    const std::string key = pa->str("api-key");
    const bool printable = std::all_of(key.begin(), key.end(), [](char ch) {
      return static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
    });
    if (key.empty() || !printable || key.front() == ' ' || key.back() == ' ') {
      return fail(Status::error(
          "--api-key is empty or has edge spaces or control characters: give a printable key, or "
          "omit --api-key to serve without one"));
    }
  }
  if (pa->has("model-name")) {
    const std::string name = pa->str("model-name");
    const bool printable = std::all_of(name.begin(), name.end(), [](char ch) {
      return static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
    });
    if (name.empty() || !printable || name.find_first_not_of(' ') == std::string::npos) {
      return fail(Status::error(strfmt(
          "--model-name %s is empty, blank or has control characters: give the id clients send "
          "as \"model\", or omit it to use the model file name",
          serve::dump(json(name)).c_str())));
    }
  }
  auto max_connections = get_int(*pa, "max-connections", 1024, 1, 65536);
  if (!max_connections) return fail(max_connections.status());
  if (auto st = apply_threads(*pa); !st) return fail(st);
  const std::string host = pa->str("host", "127.0.0.1");

  auto path = resolve_model_path(pa->str("model"));
  if (!path) return fail(path.status());
  auto model = Model::load(*path);
  if (!model) return fail(model.status());
  auto tok = load_tokenizer_for(**model);
  if (!tok) return fail(tok.status());
  auto popts = policy_options(*pa);
  if (!popts) return fail(popts.status());
  if (auto p = make_policy(*popts, (*model)->policy_info()); !p) return fail(p.status());

  // SIGTERM/SIGINT are taken by one thread with sigwait: blocked here, before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  serve::SchedulerOptions so;
  so.parallel = static_cast<int>(*parallel);
  so.queue = static_cast<int>(*queue);
  so.kv_memory = *kv_memory;
  so.prefill_rows = static_cast<int>(*chunk);
  so.threads = pa->has("threads") ? num_threads() : 0;
  Scheduler scheduler(**model, so);

  ServeContext ctx;
  ctx.model = model->get();
  ctx.tok = &*tok;
  ctx.scheduler = &scheduler;
  ctx.api_key = pa->str("api-key");
  ctx.default_method = *popts;
  ctx.default_max_tokens = static_cast<int>(*default_max);
  ctx.kv_memory = *kv_memory;
  ctx.stop_ids = stop_ids_for(*tok, (*model)->config());
  ctx.model_id = pa->has("model-name") ? pa->str("model-name")
                                       : std::filesystem::path(*path).filename().string();

  httplib::Server svr;
  // Connection threads on demand (ConnectionThreads): an idle or slow connection holds only its
  // own thread, for at most the keep-alive / read timeouts below (docs/SERVING.md, "Bounds").
  const size_t max_conn = static_cast<size_t>(*max_connections);
  svr.new_task_queue = [max_conn] { return new_connection_threads(max_conn); };
  svr.set_payload_max_length(*max_body);
  svr.set_keep_alive_timeout(kKeepAliveIdleSeconds);
  svr.set_read_timeout(kReadTimeoutSeconds, 0);
  svr.set_write_timeout(kWriteTimeoutSeconds, 0);
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second server on the
  // same port starts and takes half of the connections. The listening socket is kept to widen its
  // backlog after bind (cpp-httplib listens with a backlog of 5).
  int listen_fd = -1;
  svr.set_socket_options([&listen_fd](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = sock;
  });
  svr.set_error_handler([&ctx](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError e;
    e.status = res.status;
    e.message = res.status == 413   ? "the request body is larger than the server's --max-body"
                : res.status == 404 ? "no such endpoint"
                : res.status == 400 ? "malformed HTTP request"
                                    : strfmt("HTTP %d", res.status);
    if (res.status >= 500) e.type = "server_error";
    res.set_content(dump(error_json(e)), "application/json");
    (res.status >= 500 ? ctx.http_5xx : ctx.http_4xx).fetch_add(1);
  });
  // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112 6.3), but
  // cpp-httplib would read one until the read timeout (30 s) before answering: answer at once.
  const size_t max_body_bytes = *max_body;
  svr.set_pre_routing_handler([&ctx, max_body_bytes](const httplib::Request& req,
                                                     httplib::Response& res) {
    if (auto e = check_content_length(req, max_body_bytes)) {
      send_error(ctx, res, *e);
      res.set_header("Connection", "close");  // the body is not read: the stream cannot go on
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool takes_body = req.method == "POST" || req.method == "PUT" || req.method == "PATCH";
    if (!takes_body || req.has_header("Content-Length") || req.has_header("Transfer-Encoding")) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    ApiError e;
    e.status = 411;
    e.message = strfmt("%s needs a Content-Length header or a chunked body", req.method.c_str());
    send_error(ctx, res, e);
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_exception_handler(
      [&ctx](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        ApiError e;
        e.status = 500;
        e.type = "server_error";
        try {
          if (ep) std::rethrow_exception(ep);
          e.message = "internal error";
        } catch (const std::exception& ex) {
          e.message = std::string("internal error: ") + ex.what();
        } catch (...) {
          e.message = "internal error";
        }
        send_error(ctx, res, e);
      });
  svr.Post("/v1/completions", [&ctx](const httplib::Request& req, httplib::Response& res) {
    handle_completion(ctx, false, req, res);
  });
  svr.Post("/v1/chat/completions", [&ctx](const httplib::Request& req, httplib::Response& res) {
    handle_completion(ctx, true, req, res);
  });
  auto model_object = [&ctx] {
    return json{{"id", ctx.model_id},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "fastkv"},
                {"context_length", ctx.model->config().n_ctx},
                {"default_kv_method", format_method_spec(ctx.default_method)}};
  };
  svr.Get("/v1/models", [&ctx, model_object](const httplib::Request& req, httplib::Response& res) {
    if (!authorised(ctx, req, res)) return;
    res.set_content(dump(json{{"object", "list"}, {"data", json::array({model_object()})}}),
                    "application/json");
  });
  // GET /v1/models/{id} (the client's models.retrieve): the one model, by the id /v1/models lists.
  svr.Get(R"(/v1/models/(.+))",
          [&ctx, model_object](const httplib::Request& req, httplib::Response& res) {
            if (!authorised(ctx, req, res)) return;
            const std::string id = req.matches[1];
            if (id != ctx.model_id) {
              ApiError e;
              e.status = 404;
              e.message = strfmt("model %s is not served here (this server serves %s)",
                                 dump(json(id)).c_str(), dump(json(ctx.model_id)).c_str());
              e.code = "model_not_found";
              e.param = "model";
              send_error(ctx, res, e);
              return;
            }
            res.set_content(dump(model_object()), "application/json");
          });
  // The right path with the wrong method: 405 naming the method to use, not "no such endpoint".
  auto wrong_method = [&ctx](const char* allow) {
    return [&ctx, allow](const httplib::Request& req, httplib::Response& res) {
      ApiError e;
      e.status = 405;
      e.message =
          strfmt("%s %s: this endpoint takes %s", req.method.c_str(), req.path.c_str(), allow);
      send_error(ctx, res, e);
      res.set_header("Allow", allow);
    };
  };
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    svr.Get(path, wrong_method("POST"));
    svr.Put(path, wrong_method("POST"));
    svr.Delete(path, wrong_method("POST"));
    svr.Patch(path, wrong_method("POST"));
    svr.Options(path, wrong_method("POST"));
  }
  for (const char* path : {"/v1/models", R"(/v1/models/(.+))", "/health", "/metrics"}) {
    svr.Post(path, wrong_method("GET"));
    svr.Put(path, wrong_method("GET"));
    svr.Delete(path, wrong_method("GET"));
    svr.Patch(path, wrong_method("GET"));
    svr.Options(path, wrong_method("GET"));
  }
  svr.Get("/health", [&ctx](const httplib::Request&, httplib::Response& res) {
    const bool stopping = ctx.scheduler->stopping();
    res.status = stopping ? 503 : 200;
    res.set_content(dump(json{{"status", stopping ? "stopping" : "ok"}}), "application/json");
  });
  svr.Get("/metrics", [&ctx](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(ctx), "text/plain; version=0.0.4");
  });

  int bound_port = static_cast<int>(*port);
  if (bound_port == 0) {
    bound_port = svr.bind_to_any_port(host);
    if (bound_port < 0) return fail(Status::error(strfmt("cannot bind %s", host.c_str())));
  } else if (!svr.bind_to_port(host, bound_port)) {
    if (port_in_use(host, bound_port)) {
      return fail(
          Status::error(strfmt("port %d is already in use (on %s): stop the other "
                               "server or choose another --port",
                               bound_port, host.c_str())));
    }
    return fail(Status::error(
        strfmt("cannot bind %s:%d (not an address of this machine?)", host.c_str(), bound_port)));
  }
  // A backlog for bursts of connections up to --max-connections (the kernel caps it at somaxconn).
  if (listen_fd >= 0) ::listen(listen_fd, static_cast<int>(std::min<size_t>(max_conn, 4096)));

  std::thread engine([&scheduler] { scheduler.run(); });
  std::atomic<bool> signalled{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (sig == 0) return;
    signalled.store(true);
    std::fprintf(stderr, "[fastkv serve] signal %d: finishing queued and running requests\n", sig);
    scheduler.stop();
  });
  std::thread closer([&] {
    // After the scheduler has ended (stop + everything finished), wait for the responses to be
    // written, then close the listener so that listen_after_bind returns.
    engine.join();
    for (int i = 0; i < 300 && ctx.open_responses.load() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    svr.stop();
  });
  std::fprintf(stderr,
               "[fastkv serve] model=%s method=%s listening on http://%s:%d parallel=%lld "
               "queue=%lld kv_memory=%zu threads=%d\n",
               ctx.model_id.c_str(), format_method_spec(ctx.default_method).c_str(), host.c_str(),
               bound_port, static_cast<long long>(*parallel), static_cast<long long>(*queue),
               *kv_memory, num_threads());
  std::fflush(stderr);
  const bool listened = svr.listen_after_bind();
  if (!signalled.load()) {
    // The listener ended without a signal (an error): end the other threads.
    scheduler.stop();
    pthread_kill(signals.native_handle(), SIGTERM);
  }
  signals.join();
  closer.join();
  std::fprintf(stderr, "[fastkv serve] stopped\n");
  return listened || signalled.load() ? 0 : 1;
}

}  // namespace fkv::cli
