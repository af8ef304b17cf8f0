// Storage: one allocation shared by a tensor and its views, with the version counter and
// the bookkeeping that makes cross-stream use safe without wait_stream/record_stream by hand.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cugrad/device.h"
#include "cugrad/stream.h"

namespace cugrad {

class Storage {
 public:
  /// Allocates `nbytes` on `device`, stream-ordered on the current stream for CUDA.
  Storage(std::size_t nbytes, Device device);
  /// Frees stream-ordered: after the allocating stream has waited for every other stream
  /// that used this storage. Never blocks the host.
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

  /// Call before work on `stream` reads this storage: waits (device-side) for the last
  /// write if it was on another stream, and remembers `stream` as a reader.
  void prepare_read(const Stream& stream);
  /// Call before work on `stream` writes this storage: waits for the last write and for
  /// every reader on other streams, then makes `stream` the last writer.
  void prepare_write(const Stream& stream);
  /// Call after the last work of a read on `stream` (opened by prepare_read) has been queued,
  /// with an event recorded on `stream` after it: a later release or write on another stream
  /// then waits for that event, not for whatever `stream` queued since (an Inspector's copy
  /// stream keeps copying later activations; waiting for its tail stalled the compute stream
  /// behind copies of other tensors). The next prepare_read or prepare_write on `stream` opens
  /// a new use and forgets the event.
  void finish_read(const Stream& stream, std::shared_ptr<const Event> done);

  std::uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void note_user(const Stream& stream);
  // Makes `waiter` wait for `user`'s use of this storage: its finish_read event when it has
  // one, else everything `user` has queued so far.
  void wait_for_use(const Stream& waiter, const Stream& user) const;
  void open_use(const Stream& stream);

  void* data_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
  std::atomic<std::uint64_t> version_{0};

  std::mutex mutex_;
  Stream alloc_stream_;
  Stream writer_;                 // last stream that wrote (CUDA only)
  std::vector<Stream> readers_;   // streams other than writer_ that read since the last write
  std::vector<Stream> users_;     // every stream other than alloc_stream_ that touched it
  // Users whose last use is closed by a finish_read event.
  std::vector<std::pair<Stream, std::shared_ptr<const Event>>> finished_;
};

}  // namespace cugrad
