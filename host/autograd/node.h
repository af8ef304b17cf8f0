// Graph nodes: Node (one recorded op's backward), Edge, SavedTensor (version-checked),
// AutogradMeta (what a tensor knows about the graph), and the helpers ops use to record.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cugrad/autograd.h"
#include "cugrad/stream.h"
#include "cugrad/tensor.h"

namespace cugrad::autograd {

class Node;

struct Edge {
  std::shared_ptr<Node> fn;  // null: this input needs no gradient
  std::uint32_t input_nr = 0;
  bool valid() const { return fn != nullptr; }
};

/// A tensor saved for backward: an alias of its storage outside the graph, and the version
/// it had, so that a later in-place change is reported instead of giving wrong gradients.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  /// The saved value; throws naming `op` when it was modified in place or freed.
  Tensor unpack(const std::string& op) const;
  void reset() { data_ = Tensor(); released_ = true; }
  bool defined() const { return data_.defined(); }

 private:
  Tensor data_;
  std::uint64_t version_ = 0;
  bool released_ = false;
};

/// Shape, dtype and device of one forward output, to materialize a missing gradient.
struct OutputInfo {
  bool valid = false;  // false for an output slot that holds no tensor
  Shape shape;
  DType dtype = DType::float32;
  Device device;
};

/// A hook on the gradient of one output of a node (tensor hooks of non-leaves).
struct TensorHookEntry {
  GradHook replace;    // either this
  GradObserver observe;  // or this
};
using TensorHookList = std::vector<std::shared_ptr<TensorHookEntry>>;

/// Module-level hooks on a node: before it runs (on its output gradients, may replace them)
/// and after (on its input gradients and output gradients, may replace the input gradients).
using NodePreHook = std::function<std::optional<TensorList>(const TensorList& grad_outputs)>;
using NodePostHook =
    std::function<std::optional<TensorList>(const TensorList& grad_inputs, const TensorList& grad_outputs)>;

class Node : public std::enable_shared_from_this<Node> {
 public:
  Node();
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  virtual std::string name() const = 0;
  /// Gradients for each next edge from the gradients of each output (undefined entries for
  /// edges that need none). Runs in no-grad mode on the node's stream.
  virtual TensorList apply(TensorList grad_outputs) = 0;
  /// Frees saved tensors (after a backward without retain_graph).
  virtual void release_saved() {}
  /// True when saved tensors were freed: running again is an error.
  bool released() const { return released_; }
  void mark_released() {
    release_saved();
    released_ = true;
  }

  /// True when backward should compute the gradient for input i: the input requires grad,
  /// and (under autograd::grad) it leads to a requested gradient.
  bool needs_input_grad(std::size_t i) const {
    return i < next_edges.size() && next_edges[i].valid() && (active_.empty() || active_[i]);
  }
  void set_active_edges(std::vector<bool> active) { active_ = std::move(active); }

  std::vector<Edge> next_edges;
  std::vector<OutputInfo> outputs;
  Stream stream;
  std::uint64_t sequence_nr = 0;
  std::map<std::uint32_t, TensorHookList> tensor_hooks;  // by output index
  std::vector<std::shared_ptr<NodePreHook>> pre_hooks;
  std::vector<std::shared_ptr<NodePostHook>> post_hooks;
  /// When true (most ops), a missing output gradient is passed to apply() as zeros.
  virtual bool materialize_grads() const { return true; }
  /// Set by AccumulateGrad: the leaf whose .grad it updates.
  virtual TensorImpl* leaf() const { return nullptr; }

 protected:
  bool released_ = false;
  bool has_saved_ = false;
  std::vector<bool> active_;
};

/// What a tensor knows about the graph.
struct AutogradMeta {
  bool requires_grad = false;          // leaves
  Tensor grad;                         // accumulated gradient
  std::shared_ptr<Node> grad_fn;       // producer (non-leaves)
  std::uint32_t output_nr = 0;
  std::weak_ptr<Node> grad_accumulator;  // leaves
  TensorHookList leaf_hooks;             // leaves: hooks before accumulation
  std::vector<std::shared_ptr<PostAccumulateGradHook>> post_accumulate_hooks;
  bool retains_grad = false;
};

AutogradMeta& meta(const Tensor& t);      // creates it
AutogradMeta* meta_if(const Tensor& t);   // or null

/// True when grad mode is on and any input requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const TensorList& inputs);
/// The edge a gradient for `t` flows into (its grad_fn slot, or its leaf accumulator);
/// an invalid edge when t does not require grad.
Edge gradient_edge(const Tensor& t);
/// Finishes recording `node`: edges to `inputs`, stream, output infos, and sets each output's
/// grad_fn. Outputs must be fresh tensors.
void record(const std::shared_ptr<Node>& node, const TensorList& inputs, const TensorList& outputs);
/// Moves the history of `result` (a fresh out-of-place result) onto `target`, whose storage
/// has just received result's values (in-place ops under autograd).
void rebase_history(Tensor& target, const Tensor& result);
/// The error for in-place use of a leaf that requires grad / of a view under autograd.
void check_inplace(const char* op, const Tensor& target);

}  // namespace cugrad::autograd
