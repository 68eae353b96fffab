// Streaming machinery of the grphi tool: jobs computed by worker threads, consumed strictly in job order
// (so the output is identical for any thread count), with a bounded number of results in flight; and the
// progress line.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace grphi::cli {

// The tool's threads are its own workers: inside a job, the library's OpenMP loops (quantize's rows)
// run on the calling thread only, so --threads N means N busy cores and no spinning OpenMP teams.
inline void one_openmp_thread_here() {
#if defined(_OPENMP)
    omp_set_num_threads(1);  // this thread's setting: each worker calls it
#endif
}

// work(job) -> Result runs on `threads` workers; consume(job, Result&&) runs on the calling thread in job
// order. At most `threads + 1` results wait, so memory is bounded by ~2 x threads job-sized buffers.
// The first exception (from work or consume) stops everything and is rethrown here.
template <class Result, class Job, class Work, class Consume>
void run_ordered(const std::vector<Job>& jobs, unsigned threads, Work&& work, Consume&& consume) {
    if (threads <= 1 || jobs.size() <= 1) {
        one_openmp_thread_here();
        for (const Job& job : jobs) consume(job, work(job));
        return;
    }
    const std::size_t window = threads + 1;
    struct slot {
        std::optional<Result> result;
        std::exception_ptr error;
        bool ready = false;
    };
    std::vector<slot> slots(window);
    std::mutex mutex;
    std::condition_variable slot_freed, result_ready;
    std::size_t next_job = 0, consumed = 0;
    bool stop = false;

    auto worker = [&] {
        one_openmp_thread_here();
        for (;;) {
            std::size_t index;
            {
                std::unique_lock<std::mutex> lock(mutex);
                slot_freed.wait(lock, [&] { return stop || next_job >= jobs.size() || next_job < consumed + window; });
                if (stop || next_job >= jobs.size()) return;
                index = next_job++;
            }
            std::optional<Result> result;
            std::exception_ptr error;
            try {
                result.emplace(work(jobs[index]));
            } catch (...) {
                error = std::current_exception();
            }
            {
                std::lock_guard<std::mutex> lock(mutex);
                slot& s = slots[index % window];
                s.result = std::move(result);
                s.error = error;
                s.ready = true;
            }
            result_ready.notify_all();
        }
    };
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < threads; ++i) pool.emplace_back(worker);
    auto halt = [&] {
        {
            std::lock_guard<std::mutex> lock(mutex);
            stop = true;
        }
        slot_freed.notify_all();
        for (auto& t : pool) t.join();
    };

    try {
        for (std::size_t index = 0; index < jobs.size(); ++index) {
            std::optional<Result> result;
            {
                std::unique_lock<std::mutex> lock(mutex);
                slot& s = slots[index % window];
                result_ready.wait(lock, [&] { return s.ready; });
                if (s.error) std::rethrow_exception(s.error);
                result = std::move(s.result);
                s.result.reset();
                s.ready = false;
                consumed = index + 1;
            }
            slot_freed.notify_all();
            consume(jobs[index], std::move(*result));
        }
    } catch (...) {
        halt();
        throw;
    }
    halt();
}

// work(job, local) for every job on `threads` workers, in no particular order (jobs start in order; each
// writes its own result into place, so the output does not depend on the order). `local` is a Local per
// worker, kept from job to job (reused buffers). The first exception stops the remaining jobs and is
// rethrown here once every worker has stopped.
template <class Local, class Job, class Work>
void run_parallel(const std::vector<Job>& jobs, unsigned threads, Work&& work) {
    if (threads <= 1 || jobs.size() <= 1) {
        one_openmp_thread_here();
        Local local;
        for (const Job& job : jobs) work(job, local);
        return;
    }
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&] {
        one_openmp_thread_here();
        Local local;
        for (std::size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < jobs.size();) {
            try {
                work(jobs[i], local);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
                failed = true;
            }
        }
    };
    std::vector<std::thread> pool;
    const std::size_t count = std::min<std::size_t>(threads, jobs.size());
    try {
        for (std::size_t i = 1; i < count; ++i) pool.emplace_back(worker);
    } catch (...) {  // no thread to be had: stop the ones started, then report
        failed = true;
        for (auto& t : pool) t.join();
        throw;
    }
    worker();  // the calling thread is one of the workers
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

// "[12/340 tensors] 1.2/4.0 GB  850 MB/s  ETA 0:03" on stderr, only when stderr is a terminal.
class progress_line {
public:
    progress_line(bool enabled, std::size_t tensors, std::uint64_t bytes)
        : enabled_(enabled && ::isatty(2)), tensors_(tensors), bytes_(bytes), start_(clock::now()), last_(start_) {}

    void update(std::size_t tensors_done, std::uint64_t bytes_done, bool force = false) {
        if (!enabled_) return;
        const auto now = clock::now();
        if (!force && now - last_ < std::chrono::milliseconds(100)) return;
        last_ = now;
        const double seconds = std::chrono::duration<double>(now - start_).count();
        const double rate = seconds > 0 ? static_cast<double>(bytes_done) / seconds : 0.0;
        const double left = rate > 0 ? static_cast<double>(bytes_ - bytes_done) / rate : 0.0;
        const auto eta = static_cast<long>(left + 0.5);
        std::fprintf(stderr, "\r[%zu/%zu tensors] %.1f/%.1f MB  %.0f MB/s  ETA %ld:%02ld   ", tensors_done, tensors_,
                     static_cast<double>(bytes_done) / 1e6, static_cast<double>(bytes_) / 1e6, rate / 1e6, eta / 60,
                     eta % 60);
        std::fflush(stderr);
        shown_ = true;
    }
    void finish() {
        if (shown_) std::fprintf(stderr, "\n");
        shown_ = false;
    }
    ~progress_line() { finish(); }

private:
    using clock = std::chrono::steady_clock;
    bool enabled_;
    bool shown_ = false;
    std::size_t tensors_;
    std::uint64_t bytes_;
    clock::time_point start_, last_;
};

}  // namespace grphi::cli
