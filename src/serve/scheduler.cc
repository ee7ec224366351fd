#include "serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "kv/method_spec.h"

namespace fkv::serve {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Log-softmax of the chosen token and the `k` best alternatives (ties -> lower id), in double.
void fill_logprobs(const std::vector<float>& logits, int k, TokenEvent& ev) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  const double log_z = mx + std::log(sum);
  ev.logprob = static_cast<float>(logits[ev.id] - log_z);
  if (k <= 0) return;
  std::vector<int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  const size_t kk = std::min<size_t>(static_cast<size_t>(k), idx.size());
  std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  for (size_t i = 0; i < kk; ++i) {
    ev.top.push_back({idx[i], static_cast<float>(logits[idx[i]] - log_z)});
  }
}

}  // namespace

// An admitted job: its policy, session, stepped prefill and sampler. Declared in the order they
// depend on each other: the prefill is destroyed first (it may hold a paused worker inside
// session->prefill, which it cancels and joins), then the session, then the policy it uses.
struct Scheduler::Active {
  std::shared_ptr<Job> job;
  std::unique_ptr<KvPolicy> policy;
  std::unique_ptr<Session> session;
  std::unique_ptr<SteppedPrefill> prefill;
  std::unique_ptr<Sampler> sampler;
  std::vector<float> logits;
  int32_t next_token = 0;
  size_t reserved = 0;
  double admitted_at = 0;
};

Scheduler::Scheduler(const Model& model, const SchedulerOptions& opts)
    : model_(model), opts_(opts) {}

Scheduler::~Scheduler() = default;

Scheduler::Submit Scheduler::submit(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_.load()) return Submit::kStopping;
  if (waiting_.size() >= static_cast<size_t>(opts_.queue)) return Submit::kQueueFull;
  job->submitted_at = now_s();
  waiting_.push_back(job);
  cv_.notify_all();
  return Submit::kQueued;
}

void Scheduler::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_.store(true);
  cv_.notify_all();
}

SchedulerMetrics Scheduler::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerMetrics m = m_;
  m.queue_depth = waiting_.size();
  return m;
}

void Scheduler::finish(Active& a, const std::string& reason, const std::string& error) {
  Job& j = *a.job;
  std::lock_guard<std::mutex> lock(j.mu);
  if (j.finished) return;
  j.finished = true;
  j.finish_reason = reason;
  j.error = error;
  if (a.session) {
    const Timing& t = a.session->timing();
    j.prefill_s = t.prefill_s;
    j.decode_s = t.decode_s;
    j.kv_bytes_after_prefill = t.kv_bytes_after_prefill;
    j.kv_bytes = a.session->kv_bytes();
  }
  j.cv.notify_all();
}

// Samples nothing: records `token` (already sampled) as the job's next output, or ends the job.
// Mirrors engine/app.cc generate(): a stop id ends it (not emitted); max_tokens ends it after the
// token is emitted.
bool Scheduler::emit(Active& a, int32_t token) {
  Job& j = *a.job;
  if (std::find(j.stop_ids.begin(), j.stop_ids.end(), token) != j.stop_ids.end()) {
    finish(a, "stop");
    return false;
  }
  TokenEvent ev;
  ev.id = token;
  if (j.top_logprobs >= 0) fill_logprobs(a.logits, j.top_logprobs, ev);
  {
    std::lock_guard<std::mutex> lock(j.mu);
    j.events.push_back(std::move(ev));
    j.completion_tokens += 1;
    j.cv.notify_all();
  }
  if (j.completion_tokens >= j.max_tokens) {
    finish(a, "length");
    return false;
  }
  a.next_token = token;
  return true;
}

void Scheduler::admit_locked() {
  // A cancelled job leaves the queue at once, wherever it stands.
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if ((*it)->cancelled.load()) {
      std::lock_guard<std::mutex> lock((*it)->mu);
      (*it)->finished = true;
      (*it)->finish_reason = "cancelled";
      (*it)->cv.notify_all();
      m_.jobs_cancelled += 1;
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  // One prefill at a time: the next job is admitted when the previous prompt is in.
  while (!waiting_.empty() && prefilling_.empty() &&
         prefilling_.size() + decoding_.size() < static_cast<size_t>(opts_.parallel)) {
    std::shared_ptr<Job> job = waiting_.front();
    if (opts_.kv_memory != 0 && reserved_ + job->reserve_bytes > opts_.kv_memory) break;  // FIFO
    waiting_.pop_front();
    auto a = std::make_unique<Active>();
    a->job = job;
    a->reserved = job->reserve_bytes;
    a->admitted_at = now_s();
    job->queue_s = a->admitted_at - job->submitted_at;
    reserved_ += a->reserved;
    auto policy = make_policy(job->method, model_.policy_info());
    if (!policy) {  // validated at submit; kept as a guard
      finish(*a, "error", policy.error());
      reserved_ -= a->reserved;
      m_.jobs_failed += 1;
      continue;
    }
    a->policy = std::move(policy.value());
    a->prefill = std::make_unique<SteppedPrefill>(opts_.prefill_rows);
    SessionOptions so;
    so.max_new_tokens = job->max_tokens;
    a->session = std::make_unique<Session>(model_, *a->policy, so);
    a->sampler = std::make_unique<Sampler>(job->sampler);
    a->prefill->start(*a->session, job->prompt);
    prefilling_.push_back(std::move(a));
  }
}

void Scheduler::after_prefill(std::unique_ptr<Active> a) {
  if (!a->prefill->status()) {
    finish(*a, "error", a->prefill->status().message());
    reserved_ -= a->reserved;
    m_.jobs_failed += 1;
    return;
  }
  a->logits = std::move(a->prefill->logits());
  // The cache now has its real size: reserve what it holds plus the decode rows it will add.
  const size_t exact = a->session->kv_bytes() +
                       static_cast<size_t>(a->job->max_tokens) * kv_bytes_per_row(model_.config());
  reserved_ = reserved_ - a->reserved + exact;
  a->reserved = exact;
  m_.prompt_tokens += a->job->prompt.size();
  m_.prefill_s += a->session->timing().prefill_s;
  const int32_t token = a->sampler->sample(a->logits);
  if (emit(*a, token)) {
    decoding_.push_back(std::move(a));
  } else {
    reserved_ -= a->reserved;
    m_.jobs_done += 1;
    m_.generated_tokens += a->job->completion_tokens;
  }
}

void Scheduler::drop_cancelled() {
  auto drop = [&](std::vector<std::unique_ptr<Active>>& v) {
    for (auto it = v.begin(); it != v.end();) {
      if ((*it)->job->cancelled.load()) {
        finish(**it, "cancelled");
        reserved_ -= (*it)->reserved;
        m_.jobs_cancelled += 1;
        m_.generated_tokens += (*it)->job->completion_tokens;
        it = v.erase(it);  // frees the cache (and joins a paused prefill) now
      } else {
        ++it;
      }
    }
  };
  drop(prefilling_);
  drop(decoding_);
}

void Scheduler::run() {
  // Kernel thread counts are per thread: --threads set it for main(), not for this one.
  if (opts_.threads > 0) set_num_threads(opts_.threads);
  std::vector<BatchItem> items;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      drop_cancelled();
      admit_locked();
      if (prefilling_.empty() && decoding_.empty()) {
        if (stopping_.load() && waiting_.empty()) return;
        m_.running = m_.prefilling = 0;
        m_.kv_bytes_in_use = 0;
        m_.kv_bytes_reserved = reserved_;
        cv_.wait_for(lock, std::chrono::milliseconds(200));
        continue;
      }
    }
    // 1. One decode token for every running sequence, in one forward pass.
    if (!decoding_.empty()) {
      items.clear();
      for (auto& a : decoding_) items.push_back({a->session.get(), a->next_token, &a->logits});
      const double t0 = now_s();
      const Status st = decode_batch(items);
      const double t1 = now_s();
      std::lock_guard<std::mutex> lock(mu_);
      m_.decode_steps += 1;
      m_.decode_s += t1 - t0;
      m_.last_batch = static_cast<int>(items.size());
      recent_.push_back({t1, static_cast<int>(items.size())});
      recent_dt_.push_back(t1 - t0);
      while (!recent_.empty() && recent_.front().first < t1 - 5.0) {
        recent_.pop_front();
        recent_dt_.pop_front();
      }
      double toks = 0, dt = 0;
      for (size_t i = 0; i < recent_.size(); ++i) {
        toks += recent_[i].second;
        dt += recent_dt_[i];
      }
      m_.recent_decode_tps = dt > 0 ? toks / dt : 0;
      for (auto it = decoding_.begin(); it != decoding_.end();) {
        Active& a = **it;
        bool keep = false;
        if (!st) {
          finish(a, "error", st.message());
          m_.jobs_failed += 1;
        } else {
          keep = emit(a, a.sampler->sample(a.logits));
          if (!keep) m_.jobs_done += 1;
        }
        if (keep) {
          ++it;
        } else {
          reserved_ -= a.reserved;
          m_.generated_tokens += a.job->completion_tokens;
          it = decoding_.erase(it);
        }
      }
    }
    // 2. One piece of the oldest prefill.
    if (!prefilling_.empty()) {
      Active& a = *prefilling_.front();
      const bool done = a.prefill->run_piece();
      std::lock_guard<std::mutex> lock(mu_);
      m_.prefill_pieces += 1;
      if (done) {
        std::unique_ptr<Active> owned = std::move(prefilling_.front());
        prefilling_.erase(prefilling_.begin());
        after_prefill(std::move(owned));
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    m_.running = decoding_.size();
    m_.prefilling = prefilling_.size();
    size_t in_use = 0;
    for (auto& a : decoding_) in_use += a->session->kv_bytes();
    m_.kv_bytes_in_use = in_use;
    m_.kv_bytes_reserved = reserved_;
  }
}

}  // namespace fkv::serve
