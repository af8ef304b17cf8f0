// nn::Module: registration and dotted names, traversal, modes, in-place device/dtype moves,
// state_dict load/save, PyTorch-style printing, and the hook tables with their firing in
// operator() (backward hooks through autograd::BackwardHookSet).
#include "cugrad/nn/module.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <sstream>

#include "cugrad/autograd.h"
#include "host/autograd/backward_hooks.h"
#include "host/ops/op_util.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::nn {

// ---- hook table ----

namespace {

template <typename Replace, typename Observe>
struct HookEntry {
  std::uint64_t id = 0;
  Replace replace;  // exactly one of replace and observe is set
  Observe observe;
  bool removed = false;  // set by HookHandle::remove(); graphs built earlier skip the hook
};

template <typename Entry>
using EntryList = std::vector<std::shared_ptr<Entry>>;

}  // namespace

struct Module::HookTable {
  using ForwardPre = HookEntry<ForwardPreHookFn, ForwardPreObserverFn>;
  using Forward = HookEntry<ForwardHookFn, ForwardObserverFn>;
  using BackwardPre = HookEntry<BackwardPreHookFn, BackwardPreObserverFn>;
  using Backward = HookEntry<BackwardHookFn, BackwardObserverFn>;
  EntryList<ForwardPre> forward_pre;
  EntryList<Forward> forward;
  EntryList<BackwardPre> backward_pre;
  EntryList<Backward> backward;
  std::uint64_t next_id = 1;
};

namespace {

// Adds an entry to one list of the table; the handle removes it from there (if the module,
// hence the table, still exists) and marks it removed for graphs that captured it.
template <typename Entry, typename Replace, typename Observe>
HookHandle add_entry(const std::shared_ptr<Module::HookTable>& table,
                     EntryList<Entry> Module::HookTable::*list, Replace replace, Observe observe) {
  CUGRAD_CHECK(static_cast<bool>(replace) != static_cast<bool>(observe),
               "register hook: pass a callable (an empty std::function is not a hook)");
  auto entry = std::make_shared<Entry>();
  entry->id = table->next_id++;
  entry->replace = std::move(replace);
  entry->observe = std::move(observe);
  ((*table).*list).push_back(entry);
  std::weak_ptr<Module::HookTable> weak_table = table;
  std::weak_ptr<Entry> weak_entry = entry;
  const std::uint64_t id = entry->id;
  return HookHandle([weak_table, weak_entry, list, id] {
    if (auto e = weak_entry.lock()) e->removed = true;
    if (auto t = weak_table.lock()) {
      auto& v = (*t).*list;
      v.erase(
          std::remove_if(v.begin(), v.end(), [id](const std::shared_ptr<Entry>& p) { return p->id == id; }),
          v.end());
    }
  });
}

std::vector<std::uint64_t> versions_of(const TensorList& tensors) {
  std::vector<std::uint64_t> v;
  for (const Tensor& t : tensors) v.push_back(t.defined() ? t.version() : 0);
  return v;
}

std::string label_of(const Module& m) {
  return m.name().empty() ? m.type_name() : detail::cat(m.type_name(), " '", m.name(), "'");
}

// Observers may look, never touch: an in-place change to what they saw is an error.
void check_unchanged(const TensorList& tensors, const std::vector<std::uint64_t>& before, const Module& m,
                     const char* kind, const char* replace_with) {
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    CUGRAD_CHECK(!tensors[i].defined() || tensors[i].version() == before[i], kind, " (observer) on ",
                 label_of(m),
                 " modified a tensor it observes in place; observers cannot change results: register a hook "
                 "returning ",
                 replace_with, " to replace the value");
  }
}

// Runs the replacing entries of `list` in order (each sees the previous result), then the
// observers. `run_replace(entry)` applies one replacing hook; `run_observe(entry)` one observer.
template <typename Entry, typename RunReplace, typename RunObserve>
void fire(const EntryList<Entry>& list, RunReplace run_replace, RunObserve run_observe) {
  const EntryList<Entry> snapshot = list;  // a hook may remove hooks while we iterate
  for (const auto& e : snapshot)
    if (!e->removed && e->replace) run_replace(*e);
  for (const auto& e : snapshot)
    if (!e->removed && e->observe) run_observe(*e);
}

bool valid_name(const std::string& name) { return !name.empty() && name.find('.') == std::string::npos; }

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

template <typename T>
auto find_named(T& list, const std::string& name) {
  return std::find_if(list.begin(), list.end(), [&](const auto& p) { return p.first == name; });
}

}  // namespace

// ---- construction and identity ----

Module::Module(std::string type_name)
    : type_name_(std::move(type_name)), hooks_(std::make_shared<HookTable>()) {}

Module::~Module() = default;

Tensor Module::forward(const Tensor&) {
  throw Error(detail::cat(label_of(*this),
                          ": forward() is not implemented (a module that is only a container ",
                          "of children has no forward; call its children)"));
}

void Module::set_name(const std::string& name) { set_path(name); }

void Module::set_path(const std::string& path) {
  name_ = path;
  for (auto& [n, child] : children_) child->set_path(join(path, n));
}

void Module::check_new_name(const std::string& name, const char* what) const {
  CUGRAD_CHECK(valid_name(name), label_of(*this), ": invalid ", what, " name '", name,
               "' (names must be non-empty and contain no '.')");
  const bool is_param = find_named(parameters_, name) != parameters_.end();
  const bool is_buffer = find_named(buffers_, name) != buffers_.end();
  const bool is_child = find_named(children_, name) != children_.end();
  const std::string kind = what;
  CUGRAD_CHECK(!(is_param && kind != "parameter") && !(is_buffer && kind != "buffer") &&
                   !(is_child && kind != "module"),
               label_of(*this), ": cannot register ", what, " '", name, "': the name is already used by a ",
               is_param    ? "parameter"
               : is_buffer ? "buffer"
                           : "child module");
}

Tensor& Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_new_name(name, "parameter");
  if (tensor.defined()) {
    CUGRAD_CHECK(tensor.is_leaf(), label_of(*this), ": parameter '", name,
                 "' must be a leaf tensor, got one made by ", tensor.grad_fn_name(),
                 " (register t.detach())");
    CUGRAD_CHECK(is_floating(tensor.dtype()), label_of(*this), ": parameter '", name,
                 "' must be floating-point, got ", describe(tensor));
    tensor.requires_grad_(requires_grad);
  }
  auto it = find_named(parameters_, name);
  if (it != parameters_.end()) {
    it->second = std::move(tensor);
    return it->second;
  }
  parameters_.emplace_back(name, std::move(tensor));
  return parameters_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor tensor, bool persistent) {
  check_new_name(name, "buffer");
  CUGRAD_CHECK(!tensor.defined() || !tensor.requires_grad(), label_of(*this), ": buffer '", name,
               "' must not require grad (buffers are not trained; use register_parameter)");
  auto it = find_named(buffers_, name);
  if (it != buffers_.end()) {
    it->second = Buffer{std::move(tensor), persistent};
    return it->second.tensor;
  }
  buffers_.emplace_back(name, Buffer{std::move(tensor), persistent});
  return buffers_.back().second.tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name, "module");
  CUGRAD_CHECK(module != nullptr, label_of(*this), ": register_module('", name, "') got an empty module");
  CUGRAD_CHECK(module.get() != this, label_of(*this), ": a module cannot be its own child ('", name, "')");
  module->set_path(join(name_, name));
  auto it = find_named(children_, name);
  if (it != children_.end())
    it->second = std::move(module);
  else
    children_.emplace_back(name, std::move(module));
}

std::shared_ptr<Module> Module::self_ptr() {
  if (auto p = weak_from_this().lock()) return p;
  return std::shared_ptr<Module>(std::shared_ptr<Module>(), this);  // not owned: a non-owning alias
}

// ---- traversal ----

void Module::collect_parameters(const std::string& prefix, bool recurse,
                                std::vector<std::pair<std::string, Tensor>>& out,
                                std::vector<const void*>& seen) const {
  for (const auto& [n, t] : parameters_) {
    if (!t.defined()) continue;
    if (std::find(seen.begin(), seen.end(), t.impl()) != seen.end()) continue;
    seen.push_back(t.impl());
    out.emplace_back(join(prefix, n), t);
  }
  if (!recurse) return;
  for (const auto& [n, child] : children_) child->collect_parameters(join(prefix, n), true, out, seen);
}

void Module::collect_buffers(const std::string& prefix, bool recurse, bool persistent_only,
                             std::vector<std::pair<std::string, Tensor>>& out,
                             std::vector<const void*>& seen) const {
  for (const auto& [n, b] : buffers_) {
    if (!b.tensor.defined() || (persistent_only && !b.persistent)) continue;
    if (std::find(seen.begin(), seen.end(), b.tensor.impl()) != seen.end()) continue;
    seen.push_back(b.tensor.impl());
    out.emplace_back(join(prefix, n), b.tensor);
  }
  if (!recurse) return;
  for (const auto& [n, child] : children_)
    child->collect_buffers(join(prefix, n), true, persistent_only, out, seen);
}

void Module::collect_modules(const std::string& prefix,
                             std::vector<std::pair<std::string, std::shared_ptr<Module>>>& out,
                             std::vector<const Module*>& seen) {
  if (std::find(seen.begin(), seen.end(), this) != seen.end()) return;
  seen.push_back(this);
  out.emplace_back(prefix, self_ptr());
  for (const auto& [n, child] : children_) child->collect_modules(join(prefix, n), out, seen);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<const void*> seen;
  collect_parameters("", recurse, out, seen);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<const void*> seen;
  collect_buffers("", recurse, false, out, seen);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& [n, c] : named_children()) out.push_back(c);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  // A child registered under two names appears once, under its first name (as PyTorch).
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  for (const auto& entry : children_) {
    const bool seen =
        std::any_of(out.begin(), out.end(), [&](const auto& o) { return o.second == entry.second; });
    if (!seen) out.push_back(entry);
  }
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules() {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  std::vector<const Module*> seen;
  collect_modules("", out, seen);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::modules() {
  std::vector<std::shared_ptr<Module>> out;
  for (auto& [n, m] : named_modules()) out.push_back(m);
  return out;
}

// ---- modes and gradients ----

Module& Module::train(bool on) {
  training_ = on;
  for (auto& [n, child] : children_) child->train(on);
  return *this;
}

Module& Module::requires_grad_(bool requires_grad) {
  for (Tensor& p : parameters()) p.requires_grad_(requires_grad);
  return *this;
}

void Module::zero_grad(bool set_to_none) {
  for (Tensor& p : parameters()) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (set_to_none) {
      p.set_grad(Tensor());
    } else {
      NoGradGuard ng;
      g.zero_();
    }
  }
}

std::int64_t Module::num_parameters(bool trainable_only) const {
  std::int64_t n = 0;
  for (const Tensor& p : parameters())
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

// ---- device and dtype ----

namespace {

// Every distinct parameter and buffer of `m` (all buffers, persistent or not), with its name.
std::vector<std::pair<std::string, Tensor>> all_tensors(const Module& m) {
  auto out = m.named_parameters();
  for (auto& b : m.named_buffers()) {
    const bool dup = std::any_of(out.begin(), out.end(),
                                 [&](const auto& p) { return p.second.impl() == b.second.impl(); });
    if (!dup) out.push_back(b);
  }
  return out;
}

// Points `target`'s impl at `data`'s memory (and dtype): every Tensor sharing the impl sees it.
void assign_data(const Tensor& target, const Tensor& data) {
  TensorImpl* impl = target.impl();
  impl->storage = data.impl()->storage;
  impl->offset = data.impl()->offset;
  impl->dtype = data.impl()->dtype;
  impl->is_view = false;
}

struct PendingMove {
  Tensor target, data, grad;
};

void commit(std::vector<PendingMove>& moves) {
  for (PendingMove& m : moves) {
    assign_data(m.target, m.data);
    if (m.grad.defined()) m.target.set_grad(m.grad);
  }
}

}  // namespace

Module& Module::to(Device device) {
  std::vector<PendingMove> moves;
  {
    NoGradGuard ng;
    for (const auto& [n, t] : all_tensors(*this)) {
      if (t.device() == device) continue;
      CUGRAD_CHECK(
          !(device.is_cuda() && t.dtype() == DType::float64), label_of(*this), ".to(", device, "): '", n,
          "' is float64, which lives on the CPU only; convert the module with to(DType::float32) first");
      PendingMove m{t, t.detach().to(device), Tensor()};
      const Tensor g = t.grad();
      if (g.defined()) m.grad = g.to(device);
      moves.push_back(std::move(m));
    }
  }
  commit(moves);  // nothing moved unless everything could be
  return *this;
}

Module& Module::to(DType dtype) {
  CUGRAD_CHECK(is_floating(dtype), label_of(*this), ".to(", dtype,
               "): modules convert their floating-point tensors to float32 or float64 only");
  std::vector<PendingMove> moves;
  {
    NoGradGuard ng;
    for (const auto& [n, t] : all_tensors(*this)) {
      if (!is_floating(t.dtype()) || t.dtype() == dtype) continue;
      CUGRAD_CHECK(!(t.is_cuda() && dtype == DType::float64), label_of(*this), ".to(float64): '", n,
                   "' is on ", t.device(),
                   " and float64 lives on the CPU only; move the module to the CPU first");
      PendingMove m{t, t.detach().to(dtype), Tensor()};
      const Tensor g = t.grad();
      if (g.defined()) m.grad = g.to(dtype);
      moves.push_back(std::move(m));
    }
  }
  commit(moves);
  return *this;
}

// ---- checkpoints ----

StateDict Module::state_dict() const {
  StateDict out;
  // Shared tensors are listed under every name they have, as PyTorch does.
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m,
                                                                    const std::string& prefix) {
    for (const auto& [n, t] : m.parameters_)
      if (t.defined()) out[join(prefix, n)] = t.detach();
    for (const auto& [n, b] : m.buffers_)
      if (b.tensor.defined() && b.persistent) out[join(prefix, n)] = b.tensor.detach();
    for (const auto& [n, c] : m.children_) walk(*c, join(prefix, n));
  };
  walk(*this, "");
  return out;
}

LoadStateDictResult Module::load_state_dict(const StateDict& state, bool strict) {
  // What the module expects: the same walk as state_dict(), keeping the tensors themselves.
  std::vector<std::pair<std::string, Tensor>> expected;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m,
                                                                    const std::string& prefix) {
    for (const auto& [n, t] : m.parameters_)
      if (t.defined()) expected.emplace_back(join(prefix, n), t);
    for (const auto& [n, b] : m.buffers_)
      if (b.tensor.defined() && b.persistent) expected.emplace_back(join(prefix, n), b.tensor);
    for (const auto& [n, c] : m.children_) walk(*c, join(prefix, n));
  };
  walk(*this, "");

  LoadStateDictResult result;
  std::vector<std::string> mismatches;
  for (const auto& [key, target] : expected) {
    auto it = state.find(key);
    if (it == state.end()) {
      result.missing_keys.push_back(key);
      continue;
    }
    const Tensor& src = it->second;
    if (!src.defined()) {
      mismatches.push_back(detail::cat("'", key, "' is an undefined tensor"));
    } else if (src.shape() != target.shape()) {
      mismatches.push_back(detail::cat("'", key, "' has shape ", shape_str(src.shape()),
                                       " but the module's is ", shape_str(target.shape())));
    } else if (src.dtype() != target.dtype()) {
      mismatches.push_back(
          detail::cat("'", key, "' is ", src.dtype(), " but the module's is ", target.dtype()));
    }
  }
  for (const auto& [key, t] : state) {
    const bool known =
        std::any_of(expected.begin(), expected.end(), [&](const auto& e) { return e.first == key; });
    if (!known) result.unexpected_keys.push_back(key);
  }
  const auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::string("'") + v[i] + "'";
    return s;
  };
  std::string problems;
  if (strict && !result.missing_keys.empty()) problems += "\n  missing key(s): " + list(result.missing_keys);
  if (strict && !result.unexpected_keys.empty())
    problems += "\n  unexpected key(s): " + list(result.unexpected_keys);
  for (const auto& m : mismatches) problems += "\n  " + m;
  CUGRAD_CHECK(problems.empty(), "load_state_dict for ", label_of(*this), ": nothing was loaded:", problems);

  NoGradGuard ng;  // parameters are leaves that require grad: copy into them outside the graph
  for (const auto& [key, target] : expected) {
    auto it = state.find(key);
    if (it == state.end()) continue;
    Tensor dst = target;
    dst.copy_(it->second);
  }
  return result;
}

// ---- printing ----

namespace {

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  std::string line;
  while (std::getline(is, line)) out.push_back(line);
  return out;
}

// PyTorch's _addindent: every line after the first indented by `spaces`.
std::string add_indent(const std::string& s, int spaces) {
  const auto lines = split_lines(s);
  if (lines.size() <= 1) return s;
  std::string out = lines[0];
  for (std::size_t i = 1; i < lines.size(); ++i) {
    out.push_back('\n');
    out.append(static_cast<std::size_t>(spaces), ' ');
    out.append(lines[i]);
  }
  return out;
}

}  // namespace

std::string Module::repr() const {
  const std::string extra = extra_repr();
  const std::vector<std::string> extra_lines =
      extra.empty() ? std::vector<std::string>{} : split_lines(extra);
  std::vector<std::string> lines = extra_lines;
  for (const auto& [n, child] : children_) lines.push_back("(" + n + "): " + add_indent(child->repr(), 2));
  std::string s = type_name_ + "(";
  if (!lines.empty()) {
    if (extra_lines.size() == 1 && children_.empty()) {
      s += extra_lines[0];
    } else {
      s += "\n";
      for (const auto& l : lines) s += "  " + l + "\n";
    }
  }
  return s + ")";
}

std::string Module::to_string() const {
  return detail::cat(repr(), "\nParameters: ", num_parameters(), " (", num_parameters(true), " trainable)");
}

std::string Module::parameter_table() const {
  struct Row {
    std::string name, type, params, trainable;
  };
  std::vector<Row> rows{{"module", "type", "parameters", "trainable"}};
  std::vector<const Module*> seen;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m,
                                                                    const std::string& name) {
    if (std::find(seen.begin(), seen.end(), &m) != seen.end()) return;
    seen.push_back(&m);
    rows.push_back({name.empty() ? "(root)" : name, m.type_name(), std::to_string(m.num_parameters()),
                    std::to_string(m.num_parameters(true))});
    for (const auto& [n, c] : m.children_) walk(*c, join(name, n));
  };
  walk(*this, "");
  std::size_t w[4] = {0, 0, 0, 0};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.type.size());
    w[2] = std::max(w[2], r.params.size());
    w[3] = std::max(w[3], r.trainable.size());
  }
  std::ostringstream os;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (i) os << '\n';
    os << std::left << std::setw(static_cast<int>(w[0])) << r.name << "  "
       << std::setw(static_cast<int>(w[1])) << r.type << "  " << std::right
       << std::setw(static_cast<int>(w[2])) << r.params << "  " << std::setw(static_cast<int>(w[3]))
       << r.trainable;
  }
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Module& module) { return os << module.to_string(); }

// ---- hooks ----

HookHandle Module::add_forward_pre_hook(ForwardPreHookFn replace, ForwardPreObserverFn observe) {
  return add_entry(hooks_, &HookTable::forward_pre, std::move(replace), std::move(observe));
}
HookHandle Module::add_forward_hook(ForwardHookFn replace, ForwardObserverFn observe) {
  return add_entry(hooks_, &HookTable::forward, std::move(replace), std::move(observe));
}
HookHandle Module::add_backward_pre_hook(BackwardPreHookFn replace, BackwardPreObserverFn observe) {
  return add_entry(hooks_, &HookTable::backward_pre, std::move(replace), std::move(observe));
}
HookHandle Module::add_backward_hook(BackwardHookFn replace, BackwardObserverFn observe) {
  return add_entry(hooks_, &HookTable::backward, std::move(replace), std::move(observe));
}

bool Module::has_hooks() const {
  const HookTable& t = *hooks_;
  return !t.forward_pre.empty() || !t.forward.empty() || !t.backward_pre.empty() || !t.backward.empty();
}

namespace {
std::atomic<bool>& fusion_flag() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("CUGRAD_FUSION");
    return !(v != nullptr && std::string(v) == "0");
  }()};
  return on;
}
}  // namespace

void set_fusion_enabled(bool enabled) { fusion_flag().store(enabled); }
bool fusion_enabled() { return fusion_flag().load(); }

Tensor Module::operator()(const Tensor& x) {
  const std::shared_ptr<HookTable> table = hooks_;
  TensorList inputs{x};

  fire(
      table->forward_pre,
      [&](HookTable::ForwardPre& e) {
        if (auto r = e.replace(*this, inputs)) {
          CUGRAD_CHECK(r->size() == 1, "forward pre-hook on ", label_of(*this), " returned ", r->size(),
                       " inputs; the module takes 1");
          inputs = std::move(*r);
        }
      },
      [&](HookTable::ForwardPre& e) {
        const auto v = versions_of(inputs);
        e.observe(*this, inputs);
        check_unchanged(inputs, v, *this, "forward pre-hook", "std::optional<TensorList>");
      });

  // Backward hooks: identity nodes around this call, built from the hooks registered now.
  std::optional<autograd::BackwardHookSet> backward_set;
  if (is_grad_enabled() && (!table->backward_pre.empty() || !table->backward.empty())) {
    // The graph keeps the module alive (when it is owned by a shared_ptr) until backward.
    const std::shared_ptr<Module> keep = weak_from_this().lock();
    Module* self = this;
    std::vector<autograd::BackwardPreHookFn> pre;
    std::vector<autograd::BackwardHookFn> post;
    const auto pre_list = table->backward_pre;
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& e : pre_list) {
        if (static_cast<bool>(e->replace) != (pass == 0)) continue;
        pre.emplace_back([e, keep, self](const TensorList& g) -> std::optional<TensorList> {
          if (e->removed) return std::nullopt;
          if (e->replace) return e->replace(*self, g);
          const auto v = versions_of(g);
          e->observe(*self, g);
          check_unchanged(g, v, *self, "full backward pre-hook", "std::optional<TensorList>");
          return std::nullopt;
        });
      }
    }
    const auto post_list = table->backward;
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& e : post_list) {
        if (static_cast<bool>(e->replace) != (pass == 0)) continue;
        post.emplace_back(
            [e, keep, self](const TensorList& gi, const TensorList& go) -> std::optional<TensorList> {
              if (e->removed) return std::nullopt;
              if (e->replace) return e->replace(*self, gi, go);
              TensorList seen = gi;
              seen.insert(seen.end(), go.begin(), go.end());
              const auto v = versions_of(seen);
              e->observe(*self, gi, go);
              check_unchanged(seen, v, *self, "full backward hook", "std::optional<TensorList>");
              return std::nullopt;
            });
      }
    }
    backward_set.emplace(std::move(pre), std::move(post), label_of(*this));
    inputs = backward_set->wrap_inputs(inputs);
  }

  Tensor output = forward(inputs[0]);

  fire(
      table->forward,
      [&](HookTable::Forward& e) {
        if (auto r = e.replace(*this, inputs, output)) output = std::move(*r);
      },
      [&](HookTable::Forward& e) {
        TensorList seen = inputs;
        seen.push_back(output);
        const auto v = versions_of(seen);
        e.observe(*this, inputs, output);
        check_unchanged(seen, v, *this, "forward hook", "std::optional<Tensor>");
      });

  if (backward_set) output = backward_set->wrap_outputs({output})[0];
  return output;
}

}  // namespace cugrad::nn
