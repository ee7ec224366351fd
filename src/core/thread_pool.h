// The kernels' thread pool: persistent workers that spin briefly, then sleep, and a caller that
// takes part in its own work.
//
// Each calling thread owns its pool (thread_local, created on first use) sized by the
// set_num_threads it made: the CLI's main thread, serve's engine thread, each eval worker and the
// Python thread each have their own workers and never wait for one another. A pool serves only
// the thread that owns it, so several threads may call parallel_for at once.
//
// Work is cut into chunks that every participant claims from one atomic counter, and a region ends
// when all chunks are finished, not when all threads have arrived: a worker that has not woken yet
// claims nothing and the caller runs the chunks itself, so a descheduled worker delays the caller
// only by the chunk it already holds. The chunking never changes what is computed (each index runs
// the same code whichever thread takes it), so results are bitwise independent of thread count.
//
// Idle workers spin (pause) for FASTKV_POOL_SPIN_US microseconds (default kDefaultPoolSpinUs,
// 0 = never spin) after their last chunk, then sleep on a futex; posting work costs a few atomic
// stores while they spin and one futex wake when some sleep.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "core/status.h"

namespace fkv {

// Microseconds an idle worker spins before sleeping when FASTKV_POOL_SPIN_US is unset: longer
// than the gaps between the parallel regions of a decode step (docs/ARCHITECTURE.md, thread pool).
inline constexpr int kDefaultPoolSpinUs = 100;
inline constexpr int kMaxPoolSpinUs = 1000000;

// Threads the calling thread's parallel regions use, itself included (n <= 0: all cores this
// process may run on). Per calling thread: other threads keep their own setting.
void set_num_threads(int n);
// The calling thread's count: its set_num_threads, else default_num_threads().
int num_threads();
// The cores this process may run on (sched_getaffinity), at least 1.
int default_num_threads();

// FASTKV_POOL_SPIN_US parsed, or an error naming the variable and its text. Front-ends call it
// first thing so a bad value is a clean error; the pool itself aborts with the same message.
Expected<int> pool_spin_us_from_env();
// What bench rows record about the wait: "pool spin=100us" (or "pool spin=0us (sleep at once)").
std::string pool_wait_description();

struct ParallelOptions {
  // Indices per chunk; 0 picks about 4 chunks per thread. Only the split among threads depends on
  // it, never what an index computes.
  int64_t grain = 0;
  int max_threads = 0;  // cap on participants (0: num_threads())
};

namespace pool_detail {
using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);
void run(int64_t n, ParallelOptions o, RangeFn fn, void* ctx);
// The idle workers' spin guard (docs/ARCHITECTURE.md, Threads): whether a worker may spin after a
// check period in which it waited `waited_ns` of `elapsed_ns` for a core, given whether it could
// before (stop at >= 10 %, resume below 5 %).
bool spin_allowed_after(bool allowed_before, int64_t waited_ns, int64_t elapsed_ns);
// The calling thread's time spent runnable but not running, in ns, from
// /proc/thread-self/schedstat (open, or -1 to open it now); -1 when the kernel does not provide
// it. `fd` is kept open by a caller that reads it repeatedly.
int64_t thread_run_delay_ns(int fd);
}  // namespace pool_detail

// Calls body(begin, end) on disjoint ranges that cover [0, n) exactly once, on the calling thread
// and its pool's workers; returns when all are done. Inside a task (nested use) it runs inline on
// the current thread. The first exception a range throws is rethrown here once the ranges already
// started have finished; ranges not yet started are skipped.
template <class F>
void parallel_for_ranges(int64_t n, F&& body, ParallelOptions o = {}) {
  using Body = std::remove_reference_t<F>;
  pool_detail::run(
      n, o, [](void* ctx, int64_t begin, int64_t end) { (*static_cast<Body*>(ctx))(begin, end); },
      const_cast<void*>(static_cast<const void*>(&body)));
}

// Calls body(i) for every i in [0, n), as parallel_for_ranges.
template <class F>
void parallel_for(int64_t n, F&& body, ParallelOptions o = {}) {
  parallel_for_ranges(
      n,
      [&body](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) body(i);
      },
      o);
}

}  // namespace fkv
