#include "core/thread_pool.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "core/check.h"
#include "core/parse_number.h"

namespace fkv {
namespace {

using Clock = std::chrono::steady_clock;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "the futex word must be a plain 32-bit integer");

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
            nullptr, 0);
}

void futex_wake(std::atomic<uint32_t>* word, int count) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr,
            nullptr, 0);
}

int configured_spin_us() {
  static const int us = [] {
    const Expected<int> v = pool_spin_us_from_env();
    FKV_CHECK(v.has_value(), "%s", v.error().c_str());
    return v.value();
  }();
  return us;
}

// Whether a worker may spin: not while the machine is oversubscribed. The signal is the share of
// time this worker spent runnable but waiting for a core (run_delay in /proc/thread-self/schedstat,
// nanoseconds): a CPU-bound neighbour on its core makes that about half of the time, and spinning
// would take time from that thread (often the caller it waits for). At kContendedPercent or more
// over one kSpinCheckPeriod the worker sleeps at once until a longer kSpinOffPeriod passes below
// kUncontendedPercent (a worker that sleeps runs less and so waits less: the lower bar over 5x the
// time keeps it from flipping back while the load lasts). A count of preemptions (getrusage's
// ru_nivcsw, still the fallback where schedstat is missing) cannot tell that neighbour from short
// wake-ups: a server's HTTP threads, waking once per streamed token, preempted a worker ~20 times
// a second for microseconds each and kept it asleep, so nearly every region paid a futex wake
// (docs/ARCHITECTURE.md, Threads).
constexpr auto kSpinCheckPeriod = std::chrono::milliseconds(200);
constexpr auto kSpinOffPeriod = std::chrono::milliseconds(1000);
constexpr int64_t kContendedPercent = 10;
constexpr int64_t kUncontendedPercent = 5;
// Fallback (no schedstat): involuntary context switches per period.
constexpr long kPreemptionsToStopSpinning = 10;

class SpinGate {
 public:
  SpinGate() : schedstat_fd_(::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC)) {
    if (schedstat_fd_ >= 0 && pool_detail::thread_run_delay_ns(schedstat_fd_) < 0) {
      ::close(schedstat_fd_);
      schedstat_fd_ = -1;
    }
  }
  ~SpinGate() {
    if (schedstat_fd_ >= 0) ::close(schedstat_fd_);
  }
  SpinGate(const SpinGate&) = delete;
  SpinGate& operator=(const SpinGate&) = delete;

  bool spin_allowed(Clock::time_point now) {
    if (now >= next_check_) {
      if (schedstat_fd_ >= 0) {
        const int64_t delay = pool_detail::thread_run_delay_ns(schedstat_fd_);
        const int64_t elapsed =
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_check_).count();
        if (delay >= 0 && last_delay_ >= 0) {
          allowed_ = pool_detail::spin_allowed_after(allowed_, delay - last_delay_, elapsed);
        }
        last_delay_ = delay;
      } else {
        rusage ru{};
        if (::getrusage(RUSAGE_THREAD, &ru) == 0) {
          allowed_ = ru.ru_nivcsw - last_preemptions_ < kPreemptionsToStopSpinning;
          last_preemptions_ = ru.ru_nivcsw;
        }
      }
      last_check_ = now;
      next_check_ = now + (allowed_ ? kSpinCheckPeriod : kSpinOffPeriod);
    }
    return allowed_;
  }

 private:
  int schedstat_fd_;
  Clock::time_point next_check_{}, last_check_{};
  int64_t last_delay_ = -1;
  long last_preemptions_ = 0;
  bool allowed_ = true;
};

// True while this thread runs a chunk (always on pool workers): parallel_for then runs inline.
thread_local bool t_in_task = false;

// One caller's workers. A job is posted by bumping the epoch in `state_` (epoch << 32 | next
// chunk to claim); participants claim chunks with a CAS that also checks the epoch, so a worker
// that read the job's fields and then slept through the job's end fails its claim instead of
// running a chunk of the next job with stale fields. Posting first stores the new epoch with the
// chunk kClosed (no claim can succeed), then the fields, then chunk 0.
class ThreadPool {
 public:
  ThreadPool(int n_workers, int spin_us) : spin_us_(spin_us) {
    threads_.reserve(static_cast<size_t>(n_workers));
    for (int i = 0; i < n_workers; ++i) threads_.emplace_back([this] { worker_main(); });
  }

  ~ThreadPool() {
    stop_.store(true);
    epoch_word_.fetch_add(1);
    futex_wake(&epoch_word_, INT_MAX);
    for (std::thread& t : threads_) t.join();
  }

  int workers() const { return static_cast<int>(threads_.size()); }

  // Runs chunks [0, n_chunks) of `job` with up to `participants` threads (the caller included).
  void run(int64_t n, int64_t grain, uint32_t n_chunks, int participants, pool_detail::RangeFn fn,
           void* ctx) {
    const uint32_t epoch = epoch_of(state_.load(std::memory_order_relaxed)) + 1;
    state_.store(pack(epoch, kClosed));
    n_.store(n, std::memory_order_release);
    grain_.store(grain, std::memory_order_release);
    n_chunks_.store(n_chunks, std::memory_order_release);
    fn_.store(fn, std::memory_order_release);
    ctx_.store(ctx, std::memory_order_release);
    seats_.store(participants - 1, std::memory_order_release);
    done_.store(0, std::memory_order_release);
    failed_.store(false, std::memory_order_release);
    state_.store(pack(epoch, 0));
    epoch_word_.store(epoch);
    // Spinning workers see the new epoch by themselves; sleeping ones need the syscall.
    if (sleepers_.load() > 0) futex_wake(&epoch_word_, participants - 1);

    const Job job{n, grain, n_chunks, fn, ctx};
    const bool was_in_task = t_in_task;
    t_in_task = true;
    work_on(epoch, job);
    t_in_task = was_in_task;
    // Only chunks other threads claimed can be left; their owners are running them.
    for (int i = 0; done_.load(std::memory_order_acquire) < n_chunks; ++i) {
      if (i < kCallerSpins) {
        cpu_relax();
      } else {
        std::this_thread::yield();  // the owner may be waiting for this core
      }
    }
    if (failed_.load(std::memory_order_acquire)) {
      std::exception_ptr e;
      {
        std::lock_guard<std::mutex> lock(error_mu_);
        e = std::exchange(error_, nullptr);
      }
      if (e) std::rethrow_exception(e);
    }
  }

 private:
  static constexpr uint32_t kClosed = 0xffffffffu;
  // Pauses the caller spends waiting for other threads' chunks before it yields its core.
  static constexpr int kCallerSpins = 2048;

  struct Job {
    int64_t n, grain;
    uint32_t n_chunks;
    pool_detail::RangeFn fn;
    void* ctx;
  };

  static uint64_t pack(uint32_t epoch, uint32_t chunk) { return uint64_t{epoch} << 32 | chunk; }
  static uint32_t epoch_of(uint64_t s) { return static_cast<uint32_t>(s >> 32); }
  static uint32_t chunk_of(uint64_t s) { return static_cast<uint32_t>(s); }

  void worker_main() {
    t_in_task = true;
    SpinGate gate;
    uint32_t seen = 0;  // the last epoch this worker looked at
    for (;;) {
      const uint64_t s = state_.load(std::memory_order_acquire);
      if (epoch_of(s) == seen) {
        if (!wait_for_job(seen, gate)) return;
        continue;
      }
      if (chunk_of(s) == kClosed) {  // being posted
        cpu_relax();
        continue;
      }
      seen = epoch_of(s);
      if (seats_.fetch_sub(1, std::memory_order_acq_rel) <= 0) continue;  // capped: sit it out
      const Job job{n_.load(std::memory_order_acquire), grain_.load(std::memory_order_acquire),
                    n_chunks_.load(std::memory_order_acquire), fn_.load(std::memory_order_acquire),
                    ctx_.load(std::memory_order_acquire)};
      work_on(seen, job);
    }
  }

  // Spins up to spin_us_ (unless `gate` says the core is contended), then sleeps, until an epoch
  // after `seen` is posted. False on shutdown.
  bool wait_for_job(uint32_t seen, SpinGate& gate) {
    const Clock::time_point now = Clock::now();
    if (spin_us_ > 0 && gate.spin_allowed(now)) {
      const Clock::time_point deadline = now + std::chrono::microseconds(spin_us_);
      for (int i = 1;; ++i) {
        if (stop_.load(std::memory_order_relaxed)) return false;
        if (epoch_of(state_.load(std::memory_order_relaxed)) != seen) return true;
        cpu_relax();
        if (i % 64 == 0 && Clock::now() >= deadline) break;
      }
    }
    // seq_cst on both sides: either the poster sees this sleeper or this thread sees the epoch.
    sleepers_.fetch_add(1);
    bool running = true;
    for (;;) {
      if (stop_.load()) {
        running = false;
        break;
      }
      if (epoch_word_.load() != seen) break;
      futex_wait(&epoch_word_, seen);
    }
    sleepers_.fetch_sub(1);
    return running;
  }

  // Claims and runs chunks of the job of `epoch` until none is left or the epoch has moved on.
  void work_on(uint32_t epoch, const Job& job) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (epoch_of(s) != epoch) return;
      const uint32_t c = chunk_of(s);
      if (c >= job.n_chunks) return;  // all claimed (or kClosed: the next job is being posted)
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        continue;
      }
      run_chunk(job, c);
      s = state_.load(std::memory_order_acquire);
    }
  }

  void run_chunk(const Job& job, uint32_t c) {
    if (!failed_.load(std::memory_order_relaxed)) {
      const int64_t begin = static_cast<int64_t>(c) * job.grain;
      const int64_t end = std::min(job.n, begin + job.grain);
      try {
        job.fn(job.ctx, begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_release);
      }
    }
    done_.fetch_add(1, std::memory_order_release);
  }

  std::atomic<uint64_t> state_{0};
  std::atomic<uint32_t> epoch_word_{0};  // futex word: the epoch last posted
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  // The posted job. Atomics because a late worker may read them while the next job is being
  // written; its claim then fails (see the class comment).
  std::atomic<int64_t> n_{0}, grain_{1};
  std::atomic<uint32_t> n_chunks_{0};
  std::atomic<pool_detail::RangeFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int> seats_{0};      // workers that may still join the posted job
  std::atomic<uint32_t> done_{0};  // chunks of the posted job finished (or skipped after a throw)
  std::atomic<bool> failed_{false};
  std::mutex error_mu_;
  std::exception_ptr error_;  // the first exception a chunk threw
  const int spin_us_;
  std::vector<std::thread> threads_;
};

struct CallerState {
  int threads = 0;  // set_num_threads of this thread (0: default_num_threads())
  std::unique_ptr<ThreadPool> pool;
};
thread_local CallerState t_caller;

ThreadPool& pool_with_workers(int n_workers) {
  std::unique_ptr<ThreadPool>& pool = t_caller.pool;
  if (!pool || pool->workers() != n_workers) {
    pool.reset();  // joins the old workers first
    pool = std::make_unique<ThreadPool>(n_workers, configured_spin_us());
  }
  return *pool;
}

}  // namespace

void set_num_threads(int n) { t_caller.threads = n < 0 ? 0 : n; }

int num_threads() { return t_caller.threads > 0 ? t_caller.threads : default_num_threads(); }

int default_num_threads() {
  static const int n = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }();
  return n;
}

Expected<int> pool_spin_us_from_env() {
  const char* text = std::getenv("FASTKV_POOL_SPIN_US");
  if (text == nullptr) return kDefaultPoolSpinUs;
  Expected<int64_t> v = parse_int_in_range(text, "FASTKV_POOL_SPIN_US", 0, kMaxPoolSpinUs);
  if (!v) return Status::error(v.error() + " (microseconds the pool's idle workers spin)");
  return static_cast<int>(*v);
}

std::string pool_wait_description() {
  const int us = configured_spin_us();
  return "pool spin=" + std::to_string(us) + "us" +
         (us == 0 ? " (sleep at once)" : ", none while contended");
}

namespace pool_detail {

void run(int64_t n, ParallelOptions o, RangeFn fn, void* ctx) {
  FKV_CHECK(n >= 0 && o.grain >= 0 && o.max_threads >= 0,
            "parallel_for: n %lld, grain %lld, max_threads %d", static_cast<long long>(n),
            static_cast<long long>(o.grain), o.max_threads);
  if (n == 0) return;
  int threads = t_in_task ? 1 : num_threads();
  if (o.max_threads > 0) threads = std::min(threads, o.max_threads);
  const int64_t grain =
      o.grain > 0 ? o.grain : std::max<int64_t>(1, (n + 4 * int64_t{threads} - 1) / (4 * threads));
  const int64_t n_chunks = (n + grain - 1) / grain;
  FKV_CHECK(n_chunks < int64_t{0xffffffff}, "parallel_for: %lld chunks",
            static_cast<long long>(n_chunks));
  threads = static_cast<int>(std::min<int64_t>(threads, n_chunks));
  if (threads <= 1) {
    for (int64_t begin = 0; begin < n; begin += grain) fn(ctx, begin, std::min(n, begin + grain));
    return;
  }
  pool_with_workers(num_threads() - 1)
      .run(n, grain, static_cast<uint32_t>(n_chunks), threads, fn, ctx);
}

bool spin_allowed_after(bool allowed_before, int64_t waited_ns, int64_t elapsed_ns) {
  if (elapsed_ns <= 0) return allowed_before;
  const int64_t percent = waited_ns * 100 / elapsed_ns;
  return percent < (allowed_before ? kContendedPercent : kUncontendedPercent);
}

int64_t thread_run_delay_ns(int fd) {
  const bool own = fd < 0;
  if (own) fd = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[96];  // "run_ns run_delay_ns timeslices\n"
  const ssize_t got = ::pread(fd, buf, sizeof(buf), 0);
  if (own) ::close(fd);
  if (got <= 0) return -1;
  const char* end = buf + got;
  const char* space = std::find(static_cast<const char*>(buf), end, ' ');
  int64_t delay = -1;
  if (space == end || std::from_chars(space + 1, end, delay).ec != std::errc()) return -1;
  return delay;
}

}  // namespace pool_detail
}  // namespace fkv
