// TensorImpl: what a Tensor handle points to: storage, offset, shape and dtype.
#pragma once

#include <memory>

#include "cugrad/tensor.h"
#include "host/autograd/node.h"
#include "host/tensor/storage.h"

namespace cugrad {

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  std::int64_t offset = 0;  // in elements
  Shape shape;
  DType dtype = DType::float32;
  bool is_view = false;  // shares another tensor's storage (views, not detach)
  std::unique_ptr<autograd::AutogradMeta> autograd;

  Device device() const { return storage->device(); }
  std::int64_t numel() const { return shape_numel(shape); }
  void* data() const {
    return static_cast<char*>(storage->data()) + offset * static_cast<std::int64_t>(element_size(dtype));
  }
};

/// A new tensor with fresh (uninitialized) storage.
Tensor make_tensor(const Shape& shape, DType dtype, Device device);
/// A view of `base`'s storage with another shape and offset.
Tensor make_view(const Tensor& base, const Shape& shape, std::int64_t offset);

}  // namespace cugrad
