#!/usr/bin/env python3
"""Regenerates cugrad's golden files from PyTorch (run wherever PyTorch is installed).

    python3 tests/golden/make_golden.py [--out tests/golden] [--only bn2d,sgd,...]

Inputs are float32 (seed 1); every output is computed by PyTorch on the CPU in float64 from
those float32 inputs, so a float32 implementation should match to about 1e-5 relative.
Each file is safetensors with its settings as JSON strings in __metadata__. The layout of
each file is described in tests/golden/README.md.
"""
import argparse
import json
import os
import struct

import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import torch_models  # noqa: E402  (cugrad's builders in PyTorch, shared with bench/compare_torch.py)

torch.manual_seed(1)


def save(path, tensors, metadata):
    """Writes a safetensors file (no dependency on the safetensors package)."""
    names = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def batch_norm_file(shape, steps=3, momentum=0.1, eps=1e-5):
    c = shape[1]
    out = {
        "weight": torch.rand(c) + 0.5,
        "bias": torch.randn(c),
        "running_mean_init": torch.randn(c) * 0.1,
        "running_var_init": torch.rand(c) + 0.5,
    }
    rm = out["running_mean_init"].double().clone()
    rv = out["running_var_init"].double().clone()
    w64, b64 = out["weight"].double(), out["bias"].double()
    for k in range(steps):
        x = torch.randn(shape) * 2 + (50 if k == 1 else 0)  # step 1: mean 50, variance must not cancel
        dy = torch.randn(shape)
        xs = x.double().requires_grad_()
        ws, bs = w64.clone().requires_grad_(), b64.clone().requires_grad_()
        y = F.batch_norm(xs, rm, rv, ws, bs, training=True, momentum=momentum, eps=eps)
        y.backward(dy.double())
        out.update({f"x_{k}": x, f"dy_{k}": dy, f"y_{k}": y.detach(), f"dx_{k}": xs.grad, f"dweight_{k}": ws.grad,
                    f"dbias_{k}": bs.grad, f"running_mean_{k}": rm.clone(), f"running_var_{k}": rv.clone()})
    x = torch.randn(shape)
    dy = torch.randn(shape)
    xs = x.double().requires_grad_()
    ws, bs = w64.clone().requires_grad_(), b64.clone().requires_grad_()
    y = F.batch_norm(xs, rm, rv, ws, bs, training=False, momentum=momentum, eps=eps)
    y.backward(dy.double())
    out.update({"x_eval": x, "dy_eval": dy, "y_eval": y.detach(), "dx_eval": xs.grad, "dweight_eval": ws.grad,
                "dbias_eval": bs.grad})
    meta = {"momentum": str(momentum), "eps": str(eps), "steps": str(steps),
            "about": "train steps 0..2 then eval; gradients per step (not accumulated)"}
    return out, meta


def cross_entropy_file(n=37, k=11, smoothing=0.1, ignore=-100):
    logits = torch.randn(n, k) * 3
    logits[0] += 1e4
    logits[1] -= 1e4
    target = torch.randint(0, k, (n,))
    target[5] = ignore
    target[9] = ignore
    weight = torch.rand(k) + 0.5
    out = {"logits": logits, "target": target, "class_weight": weight}
    for reduction in ("mean", "sum", "none"):
        for weighted in (False, True):
            suffix = reduction + ("_weighted" if weighted else "")
            x = logits.double().requires_grad_()
            loss = F.cross_entropy(x, target, weight=weight.double() if weighted else None, ignore_index=ignore,
                                   reduction=reduction, label_smoothing=smoothing)
            up = torch.tensor(0.7, dtype=torch.float64) if reduction != "none" else torch.randn(n, dtype=torch.float64)
            loss.backward(up)
            out[f"loss_{suffix}"] = loss.detach()
            out[f"grad_{suffix}"] = x.grad
            out[f"upstream_{suffix}"] = up
    all_ignored = torch.full((n,), ignore, dtype=torch.int64)
    out["loss_all_ignored_mean"] = F.cross_entropy(logits.double(), all_ignored, ignore_index=ignore,
                                                   label_smoothing=smoothing)
    return out, {"label_smoothing": str(smoothing), "ignore_index": str(ignore)}


def sgd_file(steps=5):
    configs = [
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        {"lr": 0.2},
        {"lr": 0.1, "momentum": 0.5, "nesterov": True, "maximize": True},
    ]
    shapes = [(3, 4), (5,), (2, 3, 3, 3)]
    out = {}
    for i, s in enumerate(shapes):
        out[f"p{i}_init"] = torch.randn(s)
        for step in range(steps):
            out[f"g{i}_step{step}"] = torch.randn(s)
    for c, cfg in enumerate(configs):
        params = [out[f"p{i}_init"].double().clone().requires_grad_() for i in range(len(shapes))]
        opt = torch.optim.SGD(params, **cfg)
        for step in range(steps):
            for i, p in enumerate(params):
                p.grad = out[f"g{i}_step{step}"].double()
            opt.step()
            for i, p in enumerate(params):
                out[f"cfg{c}_p{i}_step{step}"] = p.detach().clone()
    return out, {"configs": json.dumps(configs), "steps": str(steps)}


def adam_file(steps=6):
    """Adam and AdamW configurations over 3 parameters for 6 steps; parameter 1 gets no gradient
    at step 2 (its state and step count stay), and the gradients shrink after step 1 so that
    amsgrad's maximum differs from the running average."""
    configs = [
        {"optimizer": "Adam", "lr": 0.01},
        {"optimizer": "Adam", "lr": 0.02, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True},
        {"optimizer": "Adam", "lr": 0.01, "weight_decay": 0.01, "maximize": True},
        {"optimizer": "AdamW", "lr": 0.01},
        {"optimizer": "AdamW", "lr": 0.05, "betas": [0.5, 0.9], "weight_decay": 0.1, "amsgrad": True},
    ]
    shapes = [(3, 4), (5,), (2, 3, 3, 3)]
    skipped = (1, 2)  # (parameter, step) without a gradient
    out = {}
    for i, s in enumerate(shapes):
        out[f"p{i}_init"] = torch.randn(s)
        for step in range(steps):
            if (i, step) != skipped:
                out[f"g{i}_step{step}"] = torch.randn(s) * (3.0 if step < 2 else 0.3)
    for c, cfg in enumerate(configs):
        kwargs = {k: (tuple(v) if k == "betas" else v) for k, v in cfg.items() if k != "optimizer"}
        params = [out[f"p{i}_init"].double().clone().requires_grad_() for i in range(len(shapes))]
        opt = getattr(torch.optim, cfg["optimizer"])(params, **kwargs)
        for step in range(steps):
            for i, p in enumerate(params):
                p.grad = out[f"g{i}_step{step}"].double() if (i, step) != skipped else None
            opt.step()
            for i, p in enumerate(params):
                out[f"cfg{c}_p{i}_step{step}"] = p.detach().clone()
        for i, p in enumerate(params):
            st = opt.state[p]
            out[f"cfg{c}_exp_avg{i}"] = st["exp_avg"].clone()
            out[f"cfg{c}_exp_avg_sq{i}"] = st["exp_avg_sq"].clone()
            out[f"cfg{c}_step{i}"] = torch.tensor(float(st["step"]), dtype=torch.float64)
    return out, {"configs": json.dumps(configs), "steps": str(steps), "skipped": json.dumps(list(skipped))}


def schedules_file():
    def run(make, steps, with_momentum=False):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        sched = make(opt)
        lrs, moms = [], []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            moms.append(opt.param_groups[0]["momentum"])
            opt.step()
            sched.step()
        return torch.tensor(lrs, dtype=torch.float64), torch.tensor(moms, dtype=torch.float64)

    onecycle = {"max_lr": 0.2, "total_steps": 100, "pct_start": 0.25, "base_lr_initial": 0.1}
    cosine = {"lr": 0.1, "T_max": 30, "eta_min": 0.001}
    step = {"lr": 0.1, "step_size": 7, "gamma": 0.3}
    oc_lr, oc_m = run(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=100, pct_start=0.25), 100)
    cos_lr, _ = run(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=0.001), 45)
    st_lr, _ = run(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3), 30)
    return ({"onecycle_lr": oc_lr, "onecycle_momentum": oc_m, "cosine_lr": cos_lr, "step_lr": st_lr},
            {"onecycle": json.dumps(onecycle), "cosine": json.dumps(cosine), "step": json.dumps(step)})


CONVS = [
    dict(cin=3, cout=4, k=3, stride=1, padding=1, dilation=1, groups=1, bias=True, hw=[7, 6]),
    dict(cin=4, cout=6, k=3, stride=2, padding=0, dilation=1, groups=2, bias=False, hw=[9, 9]),
    dict(cin=2, cout=3, k=3, stride=1, padding=2, dilation=2, groups=1, bias=True, hw=[5, 8]),
    dict(cin=3, cout=5, k=1, stride=1, padding=0, dilation=1, groups=1, bias=True, hw=[4, 4]),
]


def conv_pool_file():
    out = {}
    for i, c in enumerate(CONVS):
        x = torch.randn(2, c["cin"], *c["hw"])
        w = torch.randn(c["cout"], c["cin"] // c["groups"], c["k"], c["k"]) * 0.3
        b = torch.randn(c["cout"]) if c["bias"] else None
        xs, ws = x.double().requires_grad_(), w.double().requires_grad_()
        bs = b.double().requires_grad_() if b is not None else None
        y = F.conv2d(xs, ws, bs, stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
        dy = torch.randn(y.shape)
        y.backward(dy.double())
        out.update({f"conv{i}_x": x, f"conv{i}_w": w, f"conv{i}_y": y, f"conv{i}_dy": dy,
                    f"conv{i}_dx": xs.grad, f"conv{i}_dw": ws.grad})
        if b is not None:
            out.update({f"conv{i}_b": b, f"conv{i}_db": bs.grad})
    x = torch.randn(2, 3, 9, 8)
    out["pool_x"] = x
    pools = {
        "maxpool2": lambda t: F.max_pool2d(t, 2),
        "maxpool3s2p1": lambda t: F.max_pool2d(t, 3, stride=2, padding=1),
        "avgpool2": lambda t: F.avg_pool2d(t, 2),
        "gap": lambda t: F.adaptive_avg_pool2d(t, 1),
    }
    for name, fn in pools.items():
        xs = x.double().requires_grad_()
        y = fn(xs)
        dy = torch.randn(y.shape)
        y.backward(dy.double())
        out.update({f"{name}_y": y, f"{name}_dy": dy, f"{name}_dx": xs.grad})
    return out, {"convs": CONVS}


def reference_cnn(width, classes=10):
    """DESIGN.md's reference network (cugrad's nn::ReferenceCnn) as nn.Sequential `f`."""
    model = torch.nn.Module()
    model.f = torch_models.reference_cnn(width, classes)
    return model


def small_cnn_file():
    model = reference_cnn(8)
    with torch.no_grad():  # non-trivial BatchNorm affine parameters and running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    out = {f"param.{k}": v.clone() for k, v in model.state_dict().items() if "num_batches" not in k}
    x = torch.randn(6, 1, 28, 28)
    target = torch.randint(0, 10, (6,))
    model64 = model.double().train()
    logits = model64.f(x.double())
    loss = F.cross_entropy(logits, target, label_smoothing=0.1)
    loss.backward()
    out.update({"x": x, "target": target, "logits": logits, "loss": loss})
    for k, p in model64.named_parameters():
        out[f"grad.{k}"] = p.grad
    for k, b in model64.named_buffers():
        if "running" in k:
            out[f"after.{k}"] = b
    return out, {"about": "Sequential f.0..f.18 as in torchvision naming; train mode; CE label_smoothing 0.1 mean"}


def two_conv_cnn_file(image_size=9):
    # Eval mode (dropout is the identity, so the result does not depend on PyTorch's dropout
    # random numbers); 9x9 images keep fc1 (and the file) small, and the odd size checks the
    # max-pool's floor (conv1 7x7, conv2 5x5, pooled 2x2: fc1 has 256 inputs).
    model = torch_models.two_conv_cnn(image_size)
    out = {f"param.{k}": v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 1, image_size, image_size)
    target = torch.randint(0, 10, (5,))
    model64 = model.double().eval()
    logits = model64(x.double())
    loss = F.cross_entropy(logits, target, label_smoothing=0.1)
    loss.backward()
    out.update({"x": x, "target": target, "logits": logits, "loss": loss})
    for k, p in model64.named_parameters():
        out[f"grad.{k}"] = p.grad
    return out, {"about": "pytorch/examples MNIST Net without log_softmax; eval mode; CE label_smoothing 0.1 mean",
                 "image_size": image_size}


GENERATORS = {
    "bn2d": lambda: batch_norm_file((4, 3, 5, 7)),
    "bn1d": lambda: batch_norm_file((16, 10)),
    "cross_entropy": cross_entropy_file,
    "sgd": sgd_file,
    "adam": adam_file,
    "schedules": schedules_file,
    "conv_pool": conv_pool_file,
    "small_cnn": small_cnn_file,
    "two_conv_cnn": two_conv_cnn_file,
}


def resnet18_keys(out_dir):
    """Writes torchvision's resnet18 state_dict layout (key, dtype, shape), which cugrad's
    resnet18 must reproduce exactly; needs torchvision."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=1000)
    path = os.path.join(out_dir, "resnet18_state_dict_keys.txt")
    with open(path, "w") as f:
        f.write("# torchvision %s resnet18(): state_dict key, dtype, shape "
                "(generated by tests/golden/make_golden.py)\n" % torchvision.__version__)
        for key, value in model.state_dict().items():
            shape = "x".join(map(str, value.shape)) or "scalar"
            f.write("%s %s %s\n" % (key, str(value.dtype).replace("torch.", ""), shape))
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--only", default=",".join(GENERATORS))
    args = ap.parse_args()
    for name in args.only.split(","):
        torch.manual_seed(1)
        tensors, meta = GENERATORS[name]()
        path = os.path.join(args.out, name + ".safetensors")
        save(path, tensors, meta)
        print(f"wrote {path} ({len(tensors)} tensors)")
    try:
        resnet18_keys(args.out)
    except ImportError:
        print("torchvision is not installed: resnet18_state_dict_keys.txt left as it is")


if __name__ == "__main__":
    main()
