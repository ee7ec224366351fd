// The kernels' thread pool: coverage of every index, nesting, several callers, exceptions and
// shutdown. No timing: speed lives in `fastkv bench`.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/check.h"
#include "core/thread_pool.h"

namespace {

// Restores the calling thread's count after a test changes it.
struct ThreadsGuard {
  int saved = fkv::num_threads();
  ~ThreadsGuard() { fkv::set_num_threads(saved); }
};

TEST(ThreadPool, EveryIndexRunsExactlyOnce) {
  ThreadsGuard guard;
  for (int threads : {1, 2, 3, 4, 8}) {
    fkv::set_num_threads(threads);
    for (int64_t n : {0, 1, 2, 3, 7, 8, 63, 64, 65, 1000, 4097}) {
      for (int64_t grain : {0, 1, 2, 5, 64, 10000}) {
        for (int max_threads : {0, 1, 2}) {
          std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
          fkv::parallel_for(n, [&](int64_t i) { hits[static_cast<size_t>(i)].fetch_add(1); },
                            {.grain = grain, .max_threads = max_threads});
          for (int64_t i = 0; i < n; ++i) {
            ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1)
                << "threads " << threads << " n " << n << " grain " << grain << " max "
                << max_threads << " index " << i;
          }
        }
      }
    }
  }
}

TEST(ThreadPool, RangesAreDisjointAndRespectTheGrain) {
  ThreadsGuard guard;
  fkv::set_num_threads(4);
  const int64_t n = 1001, grain = 10;
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  fkv::parallel_for_ranges(n,
                           [&](int64_t b, int64_t e) {
                             std::lock_guard<std::mutex> lock(mu);
                             ranges.emplace_back(b, e);
                           },
                           {.grain = grain});
  std::sort(ranges.begin(), ranges.end());
  ASSERT_EQ(ranges.size(), 101u);
  for (size_t c = 0; c < ranges.size(); ++c) {
    EXPECT_EQ(ranges[c].first, static_cast<int64_t>(c) * grain);
    EXPECT_EQ(ranges[c].second, std::min<int64_t>(n, (static_cast<int64_t>(c) + 1) * grain));
  }
}

// Many back-to-back small regions: the path decode takes (workers spinning or just woken).
TEST(ThreadPool, ManyShortRegionsInARow) {
  ThreadsGuard guard;
  fkv::set_num_threads(3);
  std::vector<int64_t> sums(24, 0);
  for (int round = 0; round < 3000; ++round) {
    fkv::parallel_for(24, [&](int64_t i) { sums[static_cast<size_t>(i)] += i + round; },
                      {.grain = 1});
  }
  for (int64_t i = 0; i < 24; ++i) {
    EXPECT_EQ(sums[static_cast<size_t>(i)], 3000 * i + 2999 * 3000 / 2) << i;
  }
}

TEST(ThreadPool, NestedUseRunsInlineWithoutDeadlock) {
  ThreadsGuard guard;
  fkv::set_num_threads(4);
  const int64_t outer = 16, inner = 50;
  std::vector<std::atomic<int>> hits(static_cast<size_t>(outer * inner));
  std::atomic<int> foreign_threads{0};
  fkv::parallel_for(outer,
                    [&](int64_t i) {
                      const std::thread::id me = std::this_thread::get_id();
                      fkv::parallel_for(inner,
                                        [&](int64_t j) {
                                          if (std::this_thread::get_id() != me)
                                            foreign_threads.fetch_add(1);
                                          // A third level, still inline.
                                          fkv::parallel_for(1, [&](int64_t) {
                                            hits[static_cast<size_t>(i * inner + j)].fetch_add(1);
                                          });
                                        },
                                        {.grain = 1});
                    },
                    {.grain = 1});
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_EQ(foreign_threads.load(), 0) << "a nested region left the thread that ran its task";
}

TEST(ThreadPool, ThreadCountIsPerCallingThread) {
  ThreadsGuard guard;
  fkv::set_num_threads(3);
  int seen_in_other = -1;
  std::thread other([&] {
    seen_in_other = fkv::num_threads();
    fkv::set_num_threads(1);
  });
  other.join();
  EXPECT_EQ(seen_in_other, fkv::default_num_threads());
  EXPECT_EQ(fkv::num_threads(), 3);
  fkv::set_num_threads(0);
  EXPECT_EQ(fkv::num_threads(), fkv::default_num_threads());
  EXPECT_GE(fkv::default_num_threads(), 1);
}

// One thread per caller, each with its own pool and count, all running regions at once.
TEST(ThreadPool, SeveralCallersAtOnce) {
  const int callers = 4;
  std::vector<int64_t> totals(callers, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < callers; ++t) {
    threads.emplace_back([t, &totals] {
      fkv::set_num_threads(1 + t % 3);
      int64_t total = 0;
      for (int round = 0; round < 300; ++round) {
        std::vector<int64_t> out(257, 0);
        fkv::parallel_for(257, [&](int64_t i) { out[static_cast<size_t>(i)] = i * (t + 1); });
        for (int64_t v : out) total += v;
      }
      totals[static_cast<size_t>(t)] = total;
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < callers; ++t) {
    EXPECT_EQ(totals[static_cast<size_t>(t)], int64_t{300} * (t + 1) * (256 * 257 / 2)) << t;
  }
}

TEST(ThreadPool, ExceptionPropagatesToTheCaller) {
  ThreadsGuard guard;
  for (int threads : {1, 2, 4}) {
    fkv::set_num_threads(threads);
    std::atomic<int> ran{0};
    try {
      fkv::parallel_for(200,
                        [&](int64_t i) {
                          ran.fetch_add(1);
                          if (i == 37) throw std::runtime_error("chunk 37 failed");
                        },
                        {.grain = 1});
      FAIL() << "no exception with " << threads << " threads";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "chunk 37 failed");
    }
    EXPECT_GE(ran.load(), 1);
    EXPECT_LE(ran.load(), 200);
    // The pool is still usable afterwards.
    std::atomic<int> count{0};
    fkv::parallel_for(100, [&](int64_t) { count.fetch_add(1); }, {.grain = 1});
    EXPECT_EQ(count.load(), 100) << threads;
  }
}

// FKV_CHECK aborts the process with its message whichever thread ran the chunk (invariants are
// not recoverable); ordinary exceptions propagate (above).
TEST(ThreadPool, FailedCheckInsideATaskAbortsWithItsMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        fkv::set_num_threads(2);
        fkv::parallel_for(
            64,
            [](int64_t i) { FKV_CHECK(i != 40, "index %lld is bad", static_cast<long long>(i)); },
            {.grain = 1});
      },
      "index 40 is bad");
}

TEST(ThreadPool, ResizeAndShutdownWithSleepingWorkers) {
  // Threads whose pools are destroyed at exit while the workers sleep (spin 0 is the env's
  // business; here they are idle long after their last region, and the pool is resized).
  for (int round = 0; round < 20; ++round) {
    std::thread caller([round] {
      fkv::set_num_threads(2 + round % 3);
      std::atomic<int64_t> sum{0};
      fkv::parallel_for(64, [&](int64_t i) { sum.fetch_add(i); }, {.grain = 1});
      EXPECT_EQ(sum.load(), 63 * 64 / 2);
      fkv::set_num_threads(1 + round % 2);  // a different size: the next region rebuilds
      sum = 0;
      fkv::parallel_for(64, [&](int64_t i) { sum.fetch_add(i); }, {.grain = 1});
      EXPECT_EQ(sum.load(), 63 * 64 / 2);
      if (round % 4 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    });
    caller.join();  // the thread_local pool joins its workers here
  }
}

TEST(ThreadPool, BadOptionsAreRejectedBeforeAnyWork) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // earlier tests left pool workers running
  EXPECT_DEATH(fkv::parallel_for(-1, [](int64_t) {}), "parallel_for");
  EXPECT_DEATH(fkv::parallel_for(4, [](int64_t) {}, {.grain = -2}), "parallel_for");
}

TEST(ThreadPool, WaitDescriptionNamesTheSpin) {
  const fkv::Expected<int> spin = fkv::pool_spin_us_from_env();
  ASSERT_TRUE(spin.has_value()) << spin.error();
  EXPECT_NE(fkv::pool_wait_description().find("pool spin=" + std::to_string(spin.value()) + "us"),
            std::string::npos);
}

// The spin guard's rule: stop spinning at 10 % of a period spent waiting for a core, resume below
// 5 % (the hysteresis keeps a sleeping worker, which waits less, from flipping back at once).
TEST(ThreadPool, SpinGuardThresholds) {
  using fkv::pool_detail::spin_allowed_after;
  const int64_t period = 200'000'000;  // ns
  EXPECT_TRUE(spin_allowed_after(true, 0, period));
  EXPECT_TRUE(spin_allowed_after(true, period / 100 * 9, period));  // 9 %: short wake-ups
  EXPECT_FALSE(spin_allowed_after(true, period / 10, period));      // 10 %
  EXPECT_FALSE(spin_allowed_after(true, period / 2, period));       // a CPU-bound neighbour
  EXPECT_FALSE(spin_allowed_after(false, period / 100 * 6, period));
  EXPECT_TRUE(spin_allowed_after(false, period / 100 * 4, period));
  EXPECT_TRUE(spin_allowed_after(true, 5, 0));  // no time elapsed: unchanged
  EXPECT_FALSE(spin_allowed_after(false, 0, 0));
}

// The signal itself: each thread's run delay is readable and, with more spinning threads than
// cores, some thread waited for one. Skipped where the kernel has no schedstat (the guard then
// counts preemptions).
TEST(ThreadPool, RunDelayGrowsWhenThreadsShareACore) {
  if (fkv::pool_detail::thread_run_delay_ns(-1) < 0)
    GTEST_SKIP() << "no /proc/thread-self/schedstat";
  const int n = fkv::default_num_threads() + 1;
  std::vector<int64_t> before(n, -1), after(n, -1);
  std::vector<std::thread> spinners;
  std::atomic<int> ready{0};
  for (int i = 0; i < n; ++i) {
    spinners.emplace_back([&, i] {
      before[i] = fkv::pool_detail::thread_run_delay_ns(-1);
      ready.fetch_add(1);
      const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
      while (std::chrono::steady_clock::now() < end) {
      }
      after[i] = fkv::pool_detail::thread_run_delay_ns(-1);
    });
  }
  for (std::thread& t : spinners) t.join();
  int64_t most = 0;
  for (int i = 0; i < n; ++i) {
    ASSERT_GE(before[i], 0);
    ASSERT_GE(after[i], before[i]);
    most = std::max(most, after[i] - before[i]);
  }
  EXPECT_GT(most, 0);
}

}  // namespace
