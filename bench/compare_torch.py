#!/usr/bin/env python3
"""Times the shapes of cugrad's kernel benchmarks in PyTorch (eager and torch.compile) on the
same GPU, and prints the ratios to cugrad's times when given cugrad's output.

    python3 bench/compare_torch.py                      # PyTorch times only
    python3 bench/compare_torch.py --cugrad results.txt # plus cugrad/PyTorch ratios

results.txt holds lines "name ms" (the `RESULT name ms` lines the cugrad benchmarks print).
Float32 without TF32; CUDA events; warm-up then the median of many runs; inputs rotated so the
L2 cache does not flatter.
"""
import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from torch_models import reference_cnn, two_conv_cnn  # noqa: E402  (shared with make_golden.py)

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def median_ms(fn, warmup=5, runs=30, lead=0):
    """Median of CUDA-event times of fn after warm-up; each timed run starts on an idle device,
    or, with lead=1, is issued behind an untimed run (see queued_ms)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(lead):
            fn()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def queued_ms(fn, warmup=5, runs=30):
    """As bench_util.h's queued_ms: each timed run issued behind an untimed one, so the interval
    holds the device's time without the launch latency of an idle device."""
    return median_ms(fn, warmup, runs, lead=1)


def copy_gbs():
    x = torch.ones(64 << 20, device="cuda")
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / (ms * 1e-3) / 1e9


def rotating(make, count=4):
    items = [make() for _ in range(count)]
    state = {"i": 0}

    def nxt():
        state["i"] = (state["i"] + 1) % count
        return items[state["i"]]

    return nxt


def bench_batch_norm(results, compiled):
    n, c, h, w = 256, 64, 56, 56
    xs = rotating(lambda: torch.randn(n, c, h, w, device="cuda", requires_grad=True))
    weight = torch.ones(c, device="cuda", requires_grad=True)
    bias = torch.zeros(c, device="cuda", requires_grad=True)
    rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
    dy = torch.randn(n, c, h, w, device="cuda")

    def fwd():
        with torch.no_grad():
            F.batch_norm(xs(), rm, rv, weight, bias, training=True, momentum=0.1)

    def fwd_bwd():
        y = F.batch_norm(xs(), rm, rv, weight, bias, training=True, momentum=0.1)
        y.backward(dy)

    results["batch_norm_train_fwd_256x64x56x56"] = median_ms(fwd)
    results["batch_norm_train_fwd_bwd_256x64x56x56"] = median_ms(fwd_bwd)
    x1 = rotating(lambda: torch.randn(4096, 1024, device="cuda"))
    w1, b1 = torch.ones(1024, device="cuda"), torch.zeros(1024, device="cuda")
    rm1, rv1 = torch.zeros(1024, device="cuda"), torch.ones(1024, device="cuda")
    with torch.no_grad():
        results["batch_norm_eval_fwd_4096x1024"] = median_ms(lambda: F.batch_norm(x1(), rm1, rv1, w1, b1, False))
        results["batch_norm_eval_fwd_4096x1024_queued"] = queued_ms(
            lambda: F.batch_norm(x1(), rm1, rv1, w1, b1, False))
    if compiled:
        cf = torch.compile(lambda x: F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.1))

        def cfwd_bwd():
            cf(xs()).backward(dy)

        results["compiled:batch_norm_train_fwd_bwd_256x64x56x56"] = median_ms(cfwd_bwd)

    # BatchNorm then ReLU, forward+backward: cugrad's batch_norm_relu (and its unfused pair);
    # eager PyTorch runs two ops, torch.compile fuses them.
    def bn_relu(x):
        return F.relu(F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.1))

    def bn_relu_fwd_bwd():
        bn_relu(xs()).backward(dy)

    t = median_ms(bn_relu_fwd_bwd)
    results["batch_norm_relu_train_fwd_bwd_256x64x56x56"] = t
    results["batch_norm_then_relu_train_fwd_bwd_256x64x56x56"] = t
    if compiled:
        cbr = torch.compile(bn_relu)

        def cbn_relu_fwd_bwd():
            cbr(xs()).backward(dy)

        results["compiled:batch_norm_relu_train_fwd_bwd_256x64x56x56"] = median_ms(cbn_relu_fwd_bwd)


def bench_cross_entropy(results, compiled):
    for n, k in ((32768, 1000), (8192, 32000), (4096, 50257), (65536, 128), (1024, 128256)):
        xs = rotating(lambda: torch.randn(n, k, device="cuda", requires_grad=True), 3)
        t = torch.randint(0, k, (n,), device="cuda")

        def fb():
            F.cross_entropy(xs(), t, label_smoothing=0.1).backward()

        results[f"cross_entropy_fwd_bwd_{n}x{k}"] = median_ms(fb)
        results[f"cross_entropy_fwd_bwd_{n}x{k}_queued"] = queued_ms(fb)
        if compiled:
            cf = torch.compile(lambda x: F.cross_entropy(x, t, label_smoothing=0.1))
            results[f"compiled:cross_entropy_fwd_bwd_{n}x{k}"] = median_ms(lambda: cf(xs()).backward())


def resnet18_shapes():
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride_block = stage > 0 and block == 0
            shapes += [(cout, cin if block == 0 else cout, 3, 3), (cout,), (cout,), (cout, cout, 3, 3), (cout,), (cout,)]
            if stride_block:
                shapes += [(cout, cin, 1, 1), (cout,), (cout,)]
        cin = cout
    shapes += [(1000, 512), (1000,)]
    return shapes


def bench_sgd(results):
    params = [torch.randn(s, device="cuda", requires_grad=True) for s in resnet18_shapes()]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True)
    opt.step()
    results[f"sgd_resnet18_{len(params)}_tensors"] = median_ms(opt.step)
    big = [torch.randn(100_000_000, device="cuda", requires_grad=True)]
    big[0].grad = torch.randn_like(big[0])
    opt2 = torch.optim.SGD(big, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True)
    opt2.step()
    results["sgd_one_100M_tensor"] = median_ms(opt2.step)


def bench_adam(results):
    """torch.optim.AdamW (fused) over ResNet-18's 62 tensors and one 100M tensor, plain and with
    amsgrad: adam_bench's cases."""
    for amsgrad in (False, True):
        tag = "adamw_amsgrad" if amsgrad else "adamw"
        for name, shapes in ((f"resnet18_{len(resnet18_shapes())}_tensors", resnet18_shapes()),
                             ("one_100M_tensor", [(100_000_000,)])):
            params = [torch.randn(s, device="cuda", requires_grad=True) for s in shapes]
            for p in params:
                p.grad = torch.randn_like(p) * 1e-3
            opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, amsgrad=amsgrad, fused=True)
            opt.step()
            results[f"{tag}_{name}"] = median_ms(opt.step)
            del opt, params
            torch.cuda.empty_cache()


def graphed_fwd_bwd_ms(model, shape, classes):
    """DESIGN.md's "graphed fwd+bwd alone": forward, label-smoothed loss and backward captured
    once in a CUDA graph and replayed (static input; gradients accumulate, no optimizer)."""
    x = torch.randn(*shape, device="cuda")
    y = torch.randint(0, classes, (shape[0],), device="cuda")
    for p in model.parameters():
        p.requires_grad_(True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        F.cross_entropy(model(x), y, label_smoothing=0.1).backward()
    return median_ms(graph.replay, 5, 50)


def graphed_step_ms(model, shape, classes, xs, ys):
    """The whole training step (forward, loss, zero_grad, backward, SGD Nesterov) captured in a
    CUDA graph after 3 warm-up steps on a side stream (PyTorch's whole-network capture recipe);
    each timed step copies a batch into the static inputs and replays (train_step_bench's
    *_cuda_graph rows)."""
    for p in model.parameters():
        p.requires_grad_(True)
    sx = torch.randn(*shape, device="cuda")
    sy = torch.randint(0, classes, (shape[0],), device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        loss = F.cross_entropy(model(sx), sy, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()

    def replay():
        sx.copy_(xs())
        sy.copy_(ys())
        graph.replay()

    return median_ms(replay, 5, 50)


def bench_train_step(results):
    """One SGD Nesterov training step, plain, backbone frozen, and with forward hooks copying
    every leaf module's output to pinned host memory (as train_step_bench does); with
    cudnn.benchmark off (the default), then on (names *_search, as cugrad's
    set_cudnn_benchmark)."""
    for search in (False, True):
        torch.backends.cudnn.benchmark = search
        bench_train_step_mode(results, "_search" if search else "")
    torch.backends.cudnn.benchmark = False


def bench_train_step_mode(results, suffix):
    cases = []
    cases.append(("two_conv_cnn_b256", two_conv_cnn().cuda(), (256, 1, 28, 28), 10, "fc2"))
    cases.append(("reference_cnn_b256", reference_cnn().cuda(), (256, 1, 28, 28), 10, "19"))
    try:
        import torchvision

        cases.append(("resnet18_b64", torchvision.models.resnet18().cuda(), (64, 3, 224, 224), 1000, "fc"))
    except ImportError:
        print("torchvision missing: no ResNet-18 train step")
    for name, model, shape, classes, head in cases:
        xs = rotating(lambda: torch.randn(*shape, device="cuda"), 3)
        ys = rotating(lambda: torch.randint(0, classes, (shape[0],), device="cuda"), 3)
        for variant in ("", "_frozen", "_hooks"):
            for p in model.parameters():
                p.requires_grad_(variant != "_frozen")
            if variant == "_frozen":
                for p in getattr(model, head).parameters():
                    p.requires_grad_(True)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
            handles = []
            if variant == "_hooks":
                def hook(mod, inp, out):
                    host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
                    host.copy_(out, non_blocking=True)
                for m in model.modules():
                    if len(list(m.children())) == 0:
                        handles.append(m.register_forward_hook(hook))

            def step():
                loss = F.cross_entropy(model(xs()), ys(), label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if variant == "_hooks":
                    torch.cuda.synchronize()

            results[f"train_step_{name}{suffix}{variant}"] = median_ms(step, 5, 20)
            for h in handles:
                h.remove()
        model.zero_grad(set_to_none=True)
        try:
            results[f"train_step_{name}{suffix}_graphed_fwd_bwd"] = graphed_fwd_bwd_ms(model, shape, classes)
        except Exception as e:  # report, keep the other rows
            print(f"{name}: CUDA-graph capture failed: {e}")
        model.zero_grad(set_to_none=True)
        try:
            results[f"train_step_{name}{suffix}_cuda_graph"] = graphed_step_ms(model, shape, classes, xs, ys)
        except Exception as e:
            print(f"{name}: CUDA-graph capture of the whole step failed: {e}")
        model.zero_grad(set_to_none=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cugrad", help="file with 'name ms' lines from cugrad's benchmarks")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile timings")
    ap.add_argument("--only", nargs="+", choices=["batch_norm", "cross_entropy", "sgd", "adam", "train_step"],
                    help="run these groups only")
    args = ap.parse_args()
    groups = set(args.only or ["batch_norm", "cross_entropy", "sgd", "adam", "train_step"])
    print(f"PyTorch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}")
    print(f"device-to-device copy: {copy_gbs():.0f} GB/s")
    results = {}
    if "batch_norm" in groups:
        bench_batch_norm(results, not args.no_compile)
    if "cross_entropy" in groups:
        bench_cross_entropy(results, not args.no_compile)
    if "sgd" in groups:
        bench_sgd(results)
    if "adam" in groups:
        bench_adam(results)
    if "train_step" in groups:
        bench_train_step(results)
    ours = {}
    if args.cugrad:
        for line in open(args.cugrad):
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "RESULT":
                ours[parts[1]] = float(parts[2])
            elif len(parts) == 2:
                ours[parts[0]] = float(parts[1])
    print(f"{'work':55s} {'torch ms':>9s} {'cugrad ms':>9s} {'ratio':>7s}")
    for name, ms in results.items():
        base = name.split(":", 1)[-1]
        mine = ours.get(base)
        ratio = f"{mine / ms:7.2f}" if mine else "      -"
        print(f"{name:55s} {ms:9.3f} {mine if mine else float('nan'):9.3f} {ratio}")


if __name__ == "__main__":
    main()
