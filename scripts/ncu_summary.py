#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (one row per kernel launch, metric gpu__time_duration.sum, as
scripts/gpu_session.sh's profile stage writes it) per kernel and prints the kernels that take
the most GPU time, with their share, calls and mean time, and the time per family (cuDNN/cuBLAS
library kernels, cugrad's own, the rest).

Usage: ncu_summary.py PROFILE.csv [--top N] [--skip-calls K]
  --skip-calls K  ignore the first K launches (warm-up and algorithm search)
"""
import argparse
import csv
import re
import sys
from collections import defaultdict

UNITS_MS = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0,
            "second": 1e3, "s": 1e3}


def short_name(name):
    """The kernel's name without its parameter list and namespaces' noise."""
    name = re.sub(r"\(anonymous namespace\)::", "", name)
    depth = 0
    for i, ch in enumerate(name):  # cut at the parameter list's '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            name = name[:i]
            break
    name = re.sub(r"^void ", "", name)
    return name if len(name) <= 110 else name[:107] + "..."


def family(name):
    if name.startswith("cugrad::"):
        return "cugrad"
    if re.search(r"cudnn|xmma|cutlass|implicit_convolve|fft|winograd|conv|wgrad|dgrad|sm\d\d_", name, re.I):
        return "cuDNN/cuBLAS"
    if re.search(r"gemm|gemv|cublas", name, re.I):
        return "cuDNN/cuBLAS"
    return "other"


def read_rows(path):
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    reader = csv.reader(lines)
    header = None
    for row in reader:
        if header is None:
            if "Kernel Name" in row and "Metric Value" in row:
                header = {name: i for i, name in enumerate(row)}
            continue
        if len(row) < len(header) or row[header["Metric Name"]] != "gpu__time_duration.sum":
            continue
        unit = row[header["Metric Unit"]].strip()
        value = float(row[header["Metric Value"]].replace(",", ""))
        if unit not in UNITS_MS:
            sys.exit(f"ncu_summary: unknown unit {unit!r}")
        yield row[header["Kernel Name"]], value * UNITS_MS[unit]
    if header is None:
        sys.exit(f"ncu_summary: no CSV header with 'Kernel Name' and 'Metric Value' in {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--skip-calls", type=int, default=0)
    args = ap.parse_args()
    per = defaultdict(lambda: [0, 0.0])
    fam = defaultdict(float)
    launches = 0
    for i, (name, ms) in enumerate(read_rows(args.csv)):
        if i < args.skip_calls:
            continue
        launches += 1
        key = short_name(name)
        per[key][0] += 1
        per[key][1] += ms
        fam[family(key)] += ms
    total = sum(v[1] for v in per.values())
    if launches == 0 or total <= 0:
        sys.exit("ncu_summary: no kernel time in the profile")
    print(f"{launches} launches, {total:.3f} ms of kernel time in all")
    for f, ms in sorted(fam.items(), key=lambda kv: -kv[1]):
        print(f"  {f:14s} {ms:9.3f} ms  {100 * ms / total:5.1f}%")
    print(f"{'ms':>9s} {'share':>6s} {'calls':>6s} {'mean us':>8s}  kernel")
    for name, (calls, ms) in sorted(per.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"{ms:9.3f} {100 * ms / total:5.1f}% {calls:6d} {1e3 * ms / calls:8.1f}  {name}")


if __name__ == "__main__":
    main()
