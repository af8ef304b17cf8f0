// The backward engine: dependency counting over the part of the graph that leads to what was
// asked for, a ready queue in reverse creation order, gradient accumulation per node input,
// hooks, anomaly checks, and stream handling (each node on its forward stream; the caller's
// stream waits for all streams used at the end).
#include <algorithm>
#include <cmath>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "host/autograd/functions.h"
#include "host/autograd/node.h"
#include "host/ops/op_util.h"
#include "host/runtime/cuda_context.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::autograd {

namespace {

bool g_anomaly = false;
thread_local EngineStats t_stats;

struct Capture {
  Node* node;
  std::uint32_t slot;
  std::size_t index;  // position in the inputs list
};

Tensor run_tensor_hooks(const TensorHookList& hooks, Tensor g, const std::string& where) {
  if (!g.defined()) return g;
  for (const auto& h : std::vector(hooks)) {
    if (!h->replace) continue;
    std::optional<Tensor> r = h->replace(g);
    if (r && r->defined()) {
      CUGRAD_CHECK(r->shape() == g.shape() && r->dtype() == g.dtype() && r->device() == g.device(),
                   "gradient hook on ", where, " returned ", describe(*r), " for a gradient ", describe(g));
      g = *r;
    }
  }
  for (const auto& h : std::vector(hooks)) {
    if (!h->observe) continue;
    const std::uint64_t v = g.version();
    h->observe(g);
    CUGRAD_CHECK(g.version() == v, "observer hook on ", where,
                 " modified the gradient in place; use register_hook to replace a gradient");
  }
  return g;
}

void check_finite(const Tensor& g, const std::string& op, std::size_t index) {
  if (!g.defined() || !is_floating(g.dtype())) return;
  const std::vector<double> v = g.cpu().to(DType::float64).to_vector<double>();
  for (std::size_t i = 0; i < v.size(); ++i) {
    CUGRAD_CHECK(std::isfinite(v[i]), "anomaly detected: ", op, " produced ", std::isnan(v[i]) ? "NaN" : "Inf",
                 " in its gradient for input ", index, " (", describe(g), ", element ", i, ")");
  }
}

Tensor zeros_for(const OutputInfo& info) { return zeros(info.shape, info.device, info.dtype); }

// Adds `g` into buffer slot `slot` (out of place the first time, in place afterwards on a
// tensor the engine owns).
void accumulate(TensorList& buffer, std::size_t slot, const Tensor& g, std::vector<bool>& owned) {
  if (!buffer[slot].defined()) {
    buffer[slot] = g;
    owned[slot] = false;
  } else if (owned[slot]) {
    buffer[slot].add_(g);
  } else {
    buffer[slot] = buffer[slot] + g;
    owned[slot] = true;
  }
}

struct NodeState {
  int dependencies = 0;
  TensorList buffer;
  std::vector<bool> owned;
};

struct CompareSeq {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

// Runs backward from `roots` with `root_grads`. With captures (autograd::grad), only the
// nodes leading to a capture run, leaves are not accumulated, and captured gradients are
// returned; otherwise every reachable node runs.
TensorList run_backward(const std::vector<Edge>& roots, const TensorList& root_grads, bool keep_graph,
                        const std::vector<Capture>& captures, std::size_t n_inputs) {
  t_stats = EngineStats{};
  NoGradGuard no_grad;
  const bool capturing = !captures.empty() || n_inputs > 0;

  // Collect the graph reachable from the roots.
  std::vector<Node*> order;
  std::unordered_map<Node*, std::vector<Node*>> children;
  {
    std::unordered_set<Node*> seen;
    std::vector<Node*> stack;
    for (const Edge& e : roots)
      if (e.fn && seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      order.push_back(n);
      for (const Edge& e : n->next_edges) {
        if (!e.fn) continue;
        children[n].push_back(e.fn.get());
        if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
      }
    }
  }

  // Which nodes must run: everything (backward), or what leads to a capture (grad).
  std::unordered_set<Node*> needed;
  std::unordered_set<Node*> capture_nodes;
  for (const Capture& c : captures) capture_nodes.insert(c.node);
  if (!capturing) {
    needed.insert(order.begin(), order.end());
  } else {
    // Reverse creation order visits children (created earlier) first... not guaranteed for
    // every graph, so iterate to a fixed point in decreasing sequence order.
    std::vector<Node*> by_seq(order);
    std::sort(by_seq.begin(), by_seq.end(), [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; });
    bool changed = true;
    while (changed) {
      changed = false;
      for (Node* n : by_seq) {
        if (needed.count(n)) continue;
        bool need = capture_nodes.count(n) > 0;
        for (Node* c : children[n]) need = need || needed.count(c) > 0;
        if (need) {
          needed.insert(n);
          changed = true;
        }
      }
    }
  }

  std::unordered_map<Node*, NodeState> state;
  for (Node* n : order) {
    if (!needed.count(n)) continue;
    NodeState& s = state[n];
    s.buffer.resize(n->outputs.size());
    s.owned.assign(n->outputs.size(), false);
  }
  for (Node* n : order) {
    if (!needed.count(n)) continue;
    for (Node* c : children[n])
      if (needed.count(c)) ++state[c].dependencies;
  }

  TensorList captured(n_inputs);
  std::vector<Stream> streams_used;
  const auto note_stream = [&](const Stream& s) {
    if (s.handle() && std::find(streams_used.begin(), streams_used.end(), s) == streams_used.end())
      streams_used.push_back(s);
  };

  std::priority_queue<Node*, std::vector<Node*>, CompareSeq> ready;
  for (std::size_t i = 0; i < roots.size(); ++i) {
    Node* n = roots[i].fn.get();
    if (!n || !needed.count(n)) continue;
    NodeState& s = state[n];
    accumulate(s.buffer, roots[i].input_nr, root_grads[i], s.owned);
  }
  {
    std::unordered_set<Node*> queued;
    for (const Edge& e : roots) {
      Node* n = e.fn.get();
      if (n && needed.count(n) && state[n].dependencies == 0 && queued.insert(n).second) ready.push(n);
    }
  }

  while (!ready.empty()) {
    Node* node = ready.top();
    ready.pop();
    NodeState& s = state[node];
    TensorList grads = std::move(s.buffer);
    note_stream(node->stream);
    StreamGuard on_stream(node->stream);

    // Tensor hooks on this node's outputs (non-leaves), or the leaf's hooks.
    if (TensorImpl* leaf = node->leaf()) {
      if (leaf->autograd) grads[0] = run_tensor_hooks(leaf->autograd->leaf_hooks, grads[0], "a leaf tensor");
    } else {
      for (auto& [slot, hooks] : node->tensor_hooks)
        if (slot < grads.size()) grads[slot] = run_tensor_hooks(hooks, grads[slot], "the output of " + node->name());
    }
    for (const Capture& c : captures)
      if (c.node == node) captured[c.index] = grads[c.slot];

    const bool all_undefined =
        std::none_of(grads.begin(), grads.end(), [](const Tensor& g) { return g.defined(); });
    const bool is_accumulate = node->leaf() != nullptr;
    const bool leads_further =
        std::any_of(children[node].begin(), children[node].end(), [&](Node* c) { return needed.count(c) > 0; });
    TensorList grad_inputs;
    if (!all_undefined && (capturing ? leads_further : true) && !(capturing && is_accumulate)) {
      for (const auto& hook : std::vector(node->pre_hooks)) {
        if (auto r = (*hook)(grads)) grads = *r;
      }
      for (std::size_t i = 0; i < grads.size(); ++i)
        if (!grads[i].defined() && !is_accumulate && node->materialize_grads() && node->outputs[i].valid)
          grads[i] = zeros_for(node->outputs[i]);
      // Under autograd::grad, tell the node which inputs lead to a requested gradient so
      // that it computes only those.
      std::vector<bool> active(node->next_edges.size());
      for (std::size_t i = 0; i < active.size(); ++i)
        active[i] = node->next_edges[i].fn && needed.count(node->next_edges[i].fn.get());
      node->set_active_edges(capturing ? std::move(active) : std::vector<bool>{});
      t_stats.executed.push_back(node->name());
      try {
        grad_inputs = node->apply(grads);
      } catch (...) {
        node->set_active_edges({});
        throw;
      }
      node->set_active_edges({});
      for (const auto& hook : std::vector(node->post_hooks)) {
        if (auto r = (*hook)(grad_inputs, grads)) grad_inputs = *r;
      }
      if (g_anomaly)
        for (std::size_t i = 0; i < grad_inputs.size(); ++i) check_finite(grad_inputs[i], node->name(), i);
      if (!keep_graph) node->mark_released();
    }

    // Hand gradients to the next nodes.
    for (std::size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      Node* child = e.fn.get();
      if (!child || !needed.count(child)) continue;
      NodeState& cs = state[child];
      if (i < grad_inputs.size() && grad_inputs[i].defined()) {
        StreamGuard on_child(child->stream.handle() ? child->stream : node->stream);
        accumulate(cs.buffer, e.input_nr, grad_inputs[i], cs.owned);
      }
      if (--cs.dependencies == 0) ready.push(child);
    }
  }

  // The caller's current stream waits for every stream backward ran on.
  for (const Stream& s : streams_used) runtime::stream_wait_stream(Stream::current(s.device()), s);
  return captured;
}

TensorList make_root_grads(const TensorList& outputs, const TensorList& grad_outputs, const char* op) {
  CUGRAD_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(), op, ": ", grad_outputs.size(),
               " grad_outputs for ", outputs.size(), " outputs");
  TensorList grads;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    check_defined(op, out, "output");
    CUGRAD_CHECK(out.requires_grad(), op, ": output ", i, " (", describe(out),
                 ") does not require grad and has no grad_fn: nothing to differentiate");
    Tensor g = grad_outputs.empty() ? Tensor() : grad_outputs[i];
    if (!g.defined()) {
      CUGRAD_CHECK(out.numel() == 1, op, ": a gradient must be given for the non-scalar output ", describe(out),
                   " (grad can be implicitly created only for one-element outputs)");
      g = ones_like(out);
    } else {
      CUGRAD_CHECK(g.shape() == out.shape() && g.dtype() == out.dtype() && g.device() == out.device(), op,
                   ": gradient ", describe(g), " does not match output ", describe(out));
    }
    grads.push_back(g);
  }
  return grads;
}

}  // namespace

void set_detect_anomaly(bool enabled) { g_anomaly = enabled; }
bool is_anomaly_enabled() { return g_anomaly; }
const EngineStats& last_backward_stats() { return t_stats; }

void backward(const TensorList& outputs, const TensorList& grad_outputs, bool retain_graph) {
  const TensorList grads = make_root_grads(outputs, grad_outputs, "backward");
  std::vector<Edge> roots;
  for (const Tensor& out : outputs) roots.push_back(gradient_edge(out));
  run_backward(roots, grads, retain_graph, {}, 0);
}

TensorList grad(const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs,
                bool retain_graph, bool allow_unused) {
  CUGRAD_CHECK(!inputs.empty(), "autograd::grad: no inputs given");
  const TensorList grads = make_root_grads(outputs, grad_outputs, "autograd::grad");
  std::vector<Edge> roots;
  for (const Tensor& out : outputs) roots.push_back(gradient_edge(out));
  std::vector<Capture> captures;
  std::vector<Edge> keep;  // keeps accumulators created here alive during the run
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    check_defined("autograd::grad", inputs[i], "input");
    CUGRAD_CHECK(inputs[i].requires_grad(), "autograd::grad: input ", i, " (", describe(inputs[i]),
                 ") does not require grad");
    Edge e = gradient_edge(inputs[i]);
    keep.push_back(e);
    captures.push_back(Capture{e.fn.get(), e.input_nr, i});
  }
  TensorList result = run_backward(roots, grads, retain_graph, captures, inputs.size());
  for (std::size_t i = 0; i < result.size(); ++i) {
    CUGRAD_CHECK(result[i].defined() || allow_unused, "autograd::grad: input ", i, " (", describe(inputs[i]),
                 ") was not used to compute the outputs; pass allow_unused=true if this is expected");
  }
  return result;
}

}  // namespace cugrad::autograd

namespace cugrad {
void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  autograd::backward({*this}, gradient.defined() ? TensorList{gradient} : TensorList{}, retain_graph);
}
}  // namespace cugrad
