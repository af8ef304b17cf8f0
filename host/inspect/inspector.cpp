// The Inspector: pinned-budgeted asynchronous device-to-host copies on a dedicated stream,
// delivered in order by a worker thread that waits on events (never a stream callback).
#include "cugrad/inspect.h"

#include <cuda_runtime.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "host/ops/op_util.h"
#include "host/runtime/allocator.h"
#include "host/runtime/capture.h"
#include "host/runtime/cuda_context.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::inspect {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::forward: return "forward";
    case Phase::backward: return "backward";
    default: return "none";
  }
}

namespace {
struct Job {
  Tensor keep_alive;  // holds the source memory until the copy is done
  runtime::PinnedBlock block;
  std::shared_ptr<Event> done;  // null for CPU tensors (copied at submission); shared with the storage
  Shape shape;
  DType dtype;
  Tag tag;
  Callback callback;
  std::size_t charged = 0;
};
}  // namespace

struct Inspector::State {
  InspectorOptions options;
  mutable std::mutex mutex;
  // Held while a copy is queued (the read's prepare, the copy, its event, finish_read): the
  // copies of concurrent callers reach a stream in the order of their finish_read calls, so a
  // storage's finish_read event is always recorded after every copy of it queued before.
  std::mutex issue;
  std::condition_variable work_cv;   // worker waits for jobs
  std::condition_variable space_cv;  // producers wait for pinned budget / flush waits for idle
  std::deque<Job> queue;
  bool busy = false;
  bool stop = false;
  std::exception_ptr error;
  InspectorStats stats;
  std::uint64_t next_sequence = 0;
  std::map<int, Stream> copy_streams;
  std::thread worker;

  void run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex);
        work_cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (queue.empty()) return;
        job = std::move(queue.front());
        queue.pop_front();
        busy = true;
      }
      std::exception_ptr failure;
      try {
        if (job.done) job.done->synchronize();
        job.callback(HostTensor(job.block.data(), job.shape, job.dtype), job.tag);
      } catch (...) {
        failure = std::current_exception();
      }
      const std::size_t charged = job.charged;
      job = Job();  // releases the pinned block and the source tensor (outside the lock)
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (failure && !error) error = failure;
        stats.delivered++;
        stats.pinned_in_use -= charged;
        busy = false;
      }
      space_cv.notify_all();
    }
  }
};

Inspector::Inspector(InspectorOptions options) : state_(std::make_unique<State>()) {
  state_->options = options;
  state_->worker = std::thread([s = state_.get()] { s->run(); });
}

Inspector::~Inspector() {
  try {
    flush();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cugrad: Inspector destroyed with an uncollected callback exception: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "cugrad: Inspector destroyed with an uncollected callback exception\n");
  }
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stop = true;
  }
  state_->work_cv.notify_all();
  state_->worker.join();
}

bool Inspector::copy(const Tensor& t, Tag tag, Callback callback) {
  check_defined("Inspector::copy", t);
  CUGRAD_CHECK(static_cast<bool>(callback), "Inspector::copy: empty callback");
  runtime::check_not_capturing("Inspector::copy", t.device());
  State& s = *state_;
  const std::size_t bytes = t.nbytes();
  CUGRAD_CHECK(bytes <= s.options.max_pinned_bytes, "Inspector::copy: ", describe(t), " needs ", bytes,
               " bytes, more than the whole pinned budget of ", s.options.max_pinned_bytes, " bytes");
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    if (s.stats.pinned_in_use + bytes > s.options.max_pinned_bytes) {
      if (s.options.when_full == WhenFull::drop_newest) {
        s.stats.dropped++;
        return false;
      }
      s.stats.blocked++;
      s.space_cv.wait(lock, [&] { return s.stats.pinned_in_use + bytes <= s.options.max_pinned_bytes; });
    }
    s.stats.pinned_in_use += bytes;
    s.stats.peak_pinned_in_use = std::max(s.stats.peak_pinned_in_use, s.stats.pinned_in_use);
    s.stats.submitted++;
    tag.sequence = s.next_sequence++;
  }
  Job job;
  job.charged = bytes;
  job.shape = t.shape();
  job.dtype = t.dtype();
  job.tag = std::move(tag);
  job.callback = std::move(callback);
  try {
    job.block = runtime::pinned_allocate(bytes);
    if (t.is_cuda()) {
      Stream stream;
      {
        std::lock_guard<std::mutex> lock(s.mutex);
        auto it = s.copy_streams.find(t.device().index());
        if (it == s.copy_streams.end()) it = s.copy_streams.emplace(t.device().index(), Stream::create(t.device())).first;
        stream = it->second;
      }
      runtime::DeviceGuard guard(t.device());
      std::lock_guard<std::mutex> issuing(s.issue);
      // Order the copy after t's producer, and register the copy stream as a reader so that
      // later writes to t (and its release) wait for the copy.
      t.impl()->storage->prepare_read(stream);
      if (bytes > 0)
        CUGRAD_CUDA_CHECK(cudaMemcpyAsync(job.block.data(), t.raw_data(), bytes, cudaMemcpyDeviceToHost,
                                          runtime::cuda_stream(stream)));
      job.done = std::make_shared<Event>();
      job.done->record(stream);
      // The copy is this stream's whole use of t: releasing or overwriting t later waits for
      // this event, not for the copies of other tensors queued on the stream after it.
      t.impl()->storage->finish_read(stream, job.done);
      job.block.release_after(stream);
      job.keep_alive = t;
    } else if (bytes > 0) {
      std::memcpy(job.block.data(), t.raw_data(), bytes);
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.stats.pinned_in_use -= bytes;
    s.stats.submitted--;
    s.space_cv.notify_all();
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.queue.push_back(std::move(job));
  }
  s.work_cv.notify_one();
  return true;
}

void Inspector::flush() {
  State& s = *state_;
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    s.space_cv.wait(lock, [&] { return s.queue.empty() && !s.busy; });
    std::swap(error, s.error);
  }
  if (error) std::rethrow_exception(error);
}

InspectorStats Inspector::stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->stats;
}

}  // namespace cugrad::inspect
