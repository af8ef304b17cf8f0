// HookHandle: returned by every register_*_hook; remove() detaches the hook (idempotent,
// safe after the tensor, node or module is gone).
#pragma once

#include <functional>
#include <memory>

namespace cugrad {

class HookHandle {
 public:
  HookHandle() = default;
  explicit HookHandle(std::function<void()> remover)
      : remover_(std::make_shared<std::function<void()>>(std::move(remover))) {}
  /// Detaches the hook. Further calls do nothing.
  void remove() {
    if (remover_ && *remover_) {
      auto f = std::move(*remover_);
      *remover_ = nullptr;
      f();
    }
  }
  bool active() const { return remover_ && *remover_; }

 private:
  std::shared_ptr<std::function<void()>> remover_;
};

}  // namespace cugrad
