// Storage allocation, stream-ordered release, and the cross-stream read/write protocol.
#include "host/tensor/storage.h"

#include <algorithm>
#include <cstdio>

#include "host/runtime/allocator.h"
#include "host/runtime/cuda_context.h"

namespace cugrad {

Storage::Storage(std::size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  if (device.is_cuda()) {
    check_device_available(device, "allocate");
    alloc_stream_ = Stream::current(device);
    writer_ = alloc_stream_;
  }
  data_ = runtime::allocate(device, nbytes, alloc_stream_);
}

Storage::~Storage() {
  if (device_.is_cuda()) {
    try {
      for (const Stream& s : users_) wait_for_use(alloc_stream_, s);
    } catch (const std::exception& e) {
      // Could not order the free after another stream: keep the memory rather than risk
      // a use after free.
      std::fprintf(stderr, "cugrad: leaking %zu bytes: %s\n", nbytes_, e.what());
      return;
    }
  }
  runtime::deallocate(device_, data_, nbytes_, alloc_stream_);
}

void Storage::note_user(const Stream& stream) {
  if (stream == alloc_stream_) return;
  if (std::find(users_.begin(), users_.end(), stream) == users_.end()) users_.push_back(stream);
}

void Storage::wait_for_use(const Stream& waiter, const Stream& user) const {
  for (const auto& [s, done] : finished_)
    if (s == user) {
      done->wait(waiter);
      return;
    }
  runtime::stream_wait_stream(waiter, user);
}

void Storage::open_use(const Stream& stream) {
  std::erase_if(finished_, [&](const auto& f) { return f.first == stream; });
}

void Storage::prepare_read(const Stream& stream) {
  if (!device_.is_cuda()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  open_use(stream);
  if (stream == writer_) return;
  // A stream already among the readers has waited for writer_ since its last write.
  if (std::find(readers_.begin(), readers_.end(), stream) != readers_.end()) return;
  runtime::stream_wait_stream(stream, writer_);
  readers_.push_back(stream);
  note_user(stream);
}

void Storage::prepare_write(const Stream& stream) {
  if (!device_.is_cuda()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  open_use(stream);
  if (!(stream == writer_)) runtime::stream_wait_stream(stream, writer_);
  for (const Stream& r : readers_) wait_for_use(stream, r);
  readers_.clear();
  writer_ = stream;
  note_user(stream);
}

void Storage::finish_read(const Stream& stream, std::shared_ptr<const Event> done) {
  if (!device_.is_cuda() || !done || !done->recorded()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  // Only a stream that opened a read through prepare_read (a reader or another user) has a
  // use to close; the allocating stream and the last writer never wait for themselves.
  if (stream == alloc_stream_ || stream == writer_) return;
  if (std::find(users_.begin(), users_.end(), stream) == users_.end()) return;
  open_use(stream);
  finished_.emplace_back(stream, std::move(done));
}

}  // namespace cugrad
