// Graph recording: grad mode, AutogradMeta, SavedTensor, edges, record() and rebase_history().
#include <atomic>

#include "host/autograd/node.h"
#include "host/autograd/functions.h"
#include "host/ops/op_util.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad {

namespace {
thread_local bool t_grad_enabled = true;
std::atomic<std::uint64_t> g_sequence{0};
}  // namespace

bool is_grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool enabled) { t_grad_enabled = enabled; }

namespace autograd {

Node::Node() : sequence_nr(g_sequence.fetch_add(1)) {}

AutogradMeta& meta(const Tensor& t) {
  TensorImpl* impl = t.impl();
  CUGRAD_CHECK(impl != nullptr, "autograd: use of an undefined tensor");
  if (!impl->autograd) impl->autograd = std::make_unique<AutogradMeta>();
  return *impl->autograd;
}

AutogradMeta* meta_if(const Tensor& t) { return t.impl() ? t.impl()->autograd.get() : nullptr; }

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  data_ = t.detach();
  version_ = t.version();
}

Tensor SavedTensor::unpack(const std::string& op) const {
  CUGRAD_CHECK(!released_, op, ": trying to backward through the graph a second time (its saved tensors were ",
               "freed by the previous backward); call backward with retain_graph=true the first time");
  if (!data_.defined()) return data_;
  CUGRAD_CHECK(data_.version() == version_, op, ": a tensor it saved for backward (", describe(data_),
               ") was modified by an in-place operation: saved at version ", version_, ", now at version ",
               data_.version());
  return data_;
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!is_grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const TensorList& inputs) {
  if (!is_grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Edge gradient_edge(const Tensor& t) {
  AutogradMeta* m = t.defined() ? meta_if(t) : nullptr;
  if (!m) return {};
  if (m->grad_fn) return {m->grad_fn, m->output_nr};
  if (!m->requires_grad) return {};
  std::shared_ptr<Node> acc = m->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    acc->stream = Stream::current(t.device());
    acc->outputs.push_back(OutputInfo{true, t.shape(), t.dtype(), t.device()});
    m->grad_accumulator = acc;
  }
  return {acc, 0};
}

void record(const std::shared_ptr<Node>& node, const TensorList& inputs, const TensorList& outputs) {
  node->next_edges.clear();
  for (const Tensor& in : inputs) node->next_edges.push_back(in.defined() ? gradient_edge(in) : Edge{});
  Device dev = Device::cpu();
  for (const Tensor& out : outputs)
    if (out.defined()) dev = out.device();
  node->stream = Stream::current(dev);
  node->outputs.clear();
  std::uint32_t nr = 0;
  for (const Tensor& out : outputs) {
    if (out.defined()) {
      node->outputs.push_back(OutputInfo{true, out.shape(), out.dtype(), out.device()});
      AutogradMeta& m = meta(out);
      m.grad_fn = node;
      m.output_nr = nr;
      m.requires_grad = false;
    } else {
      node->outputs.push_back(OutputInfo{});
    }
    ++nr;
  }
}

void check_inplace(const char* op, const Tensor& target) {
  if (!is_grad_enabled()) return;
  AutogradMeta* m = meta_if(target);
  CUGRAD_CHECK(!(m && m->requires_grad && !m->grad_fn), op, ": a leaf tensor that requires grad (",
               describe(target), ") cannot be modified in place while grad mode is on; use NoGradGuard ",
               "for updates such as optimizer steps");
}

void rebase_history(Tensor& target, const Tensor& result) {
  AutogradMeta* rm = meta_if(result);
  if (!rm || !rm->grad_fn) return;
  CUGRAD_CHECK(!target.impl()->is_view, "in-place operation under autograd on a view (", describe(target),
               ") is not supported; use the out-of-place op");
  AutogradMeta& tm = meta(target);
  tm.grad_fn = rm->grad_fn;
  tm.output_nr = rm->output_nr;
  tm.requires_grad = false;
  tm.grad_accumulator.reset();
}

}  // namespace autograd

// ---- Tensor's autograd methods ----

bool Tensor::requires_grad() const {
  auto* m = impl_ ? impl_->autograd.get() : nullptr;
  return m && (m->requires_grad || m->grad_fn);
}

Tensor& Tensor::requires_grad_(bool requires_grad) {
  check_defined("requires_grad_", *this);
  auto& m = autograd::meta(*this);
  CUGRAD_CHECK(!m.grad_fn, "requires_grad_: only leaf tensors can change requires_grad (this one was made by ",
               m.grad_fn->name(), "); use detach() to get a leaf");
  CUGRAD_CHECK(!requires_grad || is_floating(dtype()), "requires_grad_: only floating-point tensors can require ",
               "gradients, got ", describe(*this));
  m.requires_grad = requires_grad;
  return *this;
}

bool Tensor::is_leaf() const {
  auto* m = impl_ ? impl_->autograd.get() : nullptr;
  return !(m && m->grad_fn);
}

Tensor Tensor::grad() const {
  auto* m = impl_ ? impl_->autograd.get() : nullptr;
  return m ? m->grad : Tensor();
}

void Tensor::set_grad(const Tensor& g) {
  check_defined("set_grad", *this);
  if (g.defined()) {
    CUGRAD_CHECK(g.shape() == shape() && g.dtype() == dtype() && g.device() == device(), "set_grad: gradient ",
                 describe(g), " does not match the tensor ", describe(*this));
  }
  autograd::meta(*this).grad = g;
}

void Tensor::retain_grad() {
  check_defined("retain_grad", *this);
  CUGRAD_CHECK(requires_grad(), "retain_grad: the tensor does not require grad");
  auto& m = autograd::meta(*this);
  if (!m.grad_fn || m.retains_grad) return;
  m.retains_grad = true;
  std::weak_ptr<TensorImpl> weak = impl_;
  auto entry = std::make_shared<autograd::TensorHookEntry>();
  entry->observe = [weak](const Tensor& g) {
    auto impl = weak.lock();
    if (!impl || !impl->autograd) return;
    Tensor& slot = impl->autograd->grad;
    if (!slot.defined()) slot = g.clone();
    else slot.add_(g);
  };
  m.grad_fn->tensor_hooks[m.output_nr].push_back(entry);
}

Tensor Tensor::detach() const {
  check_defined("detach", *this);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = impl_->shape;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

std::string Tensor::grad_fn_name() const {
  auto* m = impl_ ? impl_->autograd.get() : nullptr;
  return m && m->grad_fn ? m->grad_fn->name() : std::string();
}

namespace {
HookHandle add_tensor_hook(const Tensor& t, std::shared_ptr<autograd::TensorHookEntry> entry) {
  check_defined("register_hook", t);
  CUGRAD_CHECK(t.requires_grad(), "register_hook: the tensor does not require grad, so no gradient will reach ",
               "the hook (", describe(t), ")");
  auto& m = autograd::meta(t);
  autograd::TensorHookList* list;
  if (m.grad_fn) list = &m.grad_fn->tensor_hooks[m.output_nr];
  else list = &m.leaf_hooks;
  list->push_back(entry);
  std::weak_ptr<autograd::TensorHookEntry> weak = entry;
  // The list lives in a node or in the tensor's meta; keep whichever owner alive weakly.
  std::weak_ptr<void> owner = m.grad_fn ? std::weak_ptr<void>(m.grad_fn) : std::weak_ptr<void>(t.impl_ptr());
  return HookHandle([list, weak, owner] {
    if (owner.expired()) return;
    auto e = weak.lock();
    for (auto it = list->begin(); it != list->end(); ++it)
      if (*it == e) {
        list->erase(it);
        return;
      }
  });
}
}  // namespace

HookHandle Tensor::register_hook(GradHook hook) {
  auto entry = std::make_shared<autograd::TensorHookEntry>();
  entry->replace = std::move(hook);
  return add_tensor_hook(*this, std::move(entry));
}

HookHandle Tensor::register_observer_hook(GradObserver hook) {
  auto entry = std::make_shared<autograd::TensorHookEntry>();
  entry->observe = std::move(hook);
  return add_tensor_hook(*this, std::move(entry));
}

HookHandle Tensor::register_post_accumulate_grad_hook(PostAccumulateGradHook hook) {
  check_defined("register_post_accumulate_grad_hook", *this);
  CUGRAD_CHECK(requires_grad() && is_leaf(), "register_post_accumulate_grad_hook: only leaf tensors that require ",
               "grad accumulate gradients (", describe(*this), ")");
  auto& m = autograd::meta(*this);
  auto entry = std::make_shared<PostAccumulateGradHook>(std::move(hook));
  m.post_accumulate_hooks.push_back(entry);
  std::weak_ptr<TensorImpl> owner = impl_;
  std::weak_ptr<PostAccumulateGradHook> weak = entry;
  return HookHandle([owner, weak] {
    auto impl = owner.lock();
    auto e = weak.lock();
    if (!impl || !impl->autograd || !e) return;
    auto& hooks = impl->autograd->post_accumulate_hooks;
    for (auto it = hooks.begin(); it != hooks.end(); ++it)
      if (*it == e) {
        hooks.erase(it);
        return;
      }
  });
}

}  // namespace cugrad
