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
import statistics

import torch
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def median_ms(fn, warmup=5, runs=30):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


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
    if compiled:
        cf = torch.compile(lambda x: F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.1))

        def cfwd_bwd():
            cf(xs()).backward(dy)

        results["compiled:batch_norm_train_fwd_bwd_256x64x56x56"] = median_ms(cfwd_bwd)


def bench_cross_entropy(results, compiled):
    for n, k in ((32768, 1000), (8192, 32000)):
        xs = rotating(lambda: torch.randn(n, k, device="cuda", requires_grad=True), 3)
        t = torch.randint(0, k, (n,), device="cuda")

        def fb():
            F.cross_entropy(xs(), t, label_smoothing=0.1).backward()

        results[f"cross_entropy_fwd_bwd_{n}x{k}"] = median_ms(fb)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cugrad", help="file with 'name ms' lines from cugrad's benchmarks")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile timings")
    args = ap.parse_args()
    print(f"PyTorch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}")
    print(f"device-to-device copy: {copy_gbs():.0f} GB/s")
    results = {}
    bench_batch_norm(results, not args.no_compile)
    bench_cross_entropy(results, not args.no_compile)
    bench_sgd(results)
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
