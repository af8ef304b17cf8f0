#!/usr/bin/env python3
"""Interoperability with PyTorch both ways, through safetensors files (CTest: resnet18_interop).

A torchvision ResNet-18 (10 classes, BatchNorm statistics randomized) is saved by PyTorch;
cugrad loads it with strict=true, runs it in eval mode and must give PyTorch's logits; the state
dict cugrad writes must load into torchvision with strict=True and hold the same values.
The PyTorch side writes and reads the files with huggingface's `safetensors` package (the
format's reference code) when it imports, from the system or from the folder
scripts/fetch_safetensors.sh installs it into (CUGRAD_TOOLS_DIR, default ~/.cache/cugrad); else
with the project's own writer and reader, and it says which.
Exit code 77 (skipped) when torch or torchvision is not installed.

    resnet18_interop.py TOOL WORKDIR
"""
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
    import torch
    import torchvision
except ImportError as e:
    # Debian's python3-torch and python3-torchvision live under the system interpreter, which
    # another python3 earlier on PATH (pyenv, a venv) hides: try it once before skipping.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and not os.environ.get("CUGRAD_INTEROP_REEXEC"):
        os.environ["CUGRAD_INTEROP_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print(f"resnet18_interop: skipped, {e}")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
from make_golden import save  # noqa: E402  (the same writer as the golden files)

try:
    sys.path.append(os.path.join(os.environ.get("CUGRAD_TOOLS_DIR") or
                                 os.path.join(os.path.expanduser("~"), ".cache", "cugrad"), "python"))
    import safetensors.torch as reference  # noqa: E402
except ImportError:
    reference = None

NUMPY = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        array = np.frombuffer(data[a:b], dtype=NUMPY[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(array.copy())
    return out


def main():
    tool, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.num_batches_tracked.fill_(7)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).double()
        expected64 = model.double()(x.double())
    model.float()
    paths = {k: os.path.join(work, k + ".safetensors") for k in ("state", "input", "logits", "state_out")}
    if reference is not None:
        print(f"PyTorch side: huggingface safetensors {reference.__name__} (save_file, load_file)")
        reference.save_file(dict(model.state_dict()), paths["state"])
        reference.save_file({"x": x}, paths["input"])
    else:
        print("PyTorch side: the project's own safetensors writer and reader "
              "(no `safetensors` package; scripts/fetch_safetensors.sh installs it)")
        save(paths["state"], dict(model.state_dict()), {})
        save(paths["input"], {"x": x}, {})
    subprocess.run([tool, paths["state"], paths["input"], paths["logits"], paths["state_out"], "10"], check=True)

    read = reference.load_file if reference is not None else load
    logits = read(paths["logits"])["logits"].double()
    err = ((logits - expected64).norm() / expected64.norm()).item()
    print(f"logits: cugrad vs PyTorch (float64) relative error {err:.2e}; PyTorch float32 vs float64 "
          f"{((expected - expected64).norm() / expected64.norm()).item():.2e}")
    ok = err < 1e-4

    state = read(paths["state_out"])
    fresh = torchvision.models.resnet18(num_classes=10)
    fresh.load_state_dict(state, strict=True)  # raises on any missing/unexpected key or shape
    mismatched = [k for k, v in model.state_dict().items() if not torch.equal(fresh.state_dict()[k], v)]
    print(f"state dict written by cugrad: {len(state)} tensors, loaded by torchvision (strict); "
          f"{len(mismatched)} differ from the original")
    ok = ok and not mismatched
    print("resnet18_interop:", "ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
