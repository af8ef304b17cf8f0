#!/usr/bin/env python3
"""Static audit of cugrad's compiled CUDA kernels (no GPU needed).

Reads the SASS and the resource usage that cuobjdump prints for a binary (libcugrad.so by
default) and, for every kernel: registers, shared memory, stack, local-memory (spill) loads and
stores, global loads and stores by width, and the theoretical occupancy (resident warps over the
SM's maximum) for blocks of the kernel's __launch_bounds__ size (256 when it declares none) on
the chosen architecture. With --check it enforces the rules the hand-written fused kernels
(batch_norm.cu, cross_entropy.cu, sgd.cu, adam.cu, clip_grad.cu) are written to:

  * no stack frame and no local-memory traffic (no register spills),
  * at least a quarter of the SM's warps resident (16 of 64 on sm_90).
    The floor is low on purpose: the cross-entropy kernels that keep a row in registers trade
    occupancy for loads in flight (a thread issues all of its row's loads before using any), so
    what they need is bytes in flight per SM, not warps; below 16 warps no kernel here would
    have enough of either,
  * every source file's streaming kernels read global memory 128 bits at a time: each file has
    kernels that issue LDG.*.128, and the listed vectorized kernels issue no narrower float
    loads in their main loop than they must (checked as: a 128-bit load exists in the kernel).

These are properties of the code generation, not measurements: they say nothing about time.
Exit status 1 when a check fails, 2 when the tools are missing.

  kernel_audit.py [--binary build/libcugrad.so] [--arch sm_90] [--check] [--markdown]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

# Per-SM limits that decide occupancy (CUDA C Programming Guide, compute capability table).
ARCH_LIMITS = {
    # regs per SM, max warps per SM, max blocks per SM, shared bytes per SM usable by blocks,
    # register allocation unit (per warp), shared allocation unit, reserved shared per block
    "sm_80": dict(regs=65536, warps=64, blocks=32, smem=167936, reg_unit=256, smem_unit=128, smem_reserved=1024),
    "sm_86": dict(regs=65536, warps=48, blocks=16, smem=102400, reg_unit=256, smem_unit=128, smem_reserved=1024),
    "sm_89": dict(regs=65536, warps=48, blocks=24, smem=102400, reg_unit=256, smem_unit=128, smem_reserved=1024),
    "sm_90": dict(regs=65536, warps=64, blocks=32, smem=233472, reg_unit=256, smem_unit=128, smem_reserved=1024),
}

FUSED_FILES = ("batch_norm.cu", "cross_entropy.cu", "sgd.cu", "adam.cu", "clip_grad.cu")

OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[0-9T]\s+)?([A-Z][A-Z0-9_.]*)")


@dataclass
class Kernel:
    mangled: str
    source: str
    regs: int = 0
    shared: int = 0
    stack: int = 0
    local: int = 0
    block: int = 256  # __launch_bounds__' maximum threads when the kernel declares one
    ops: dict[str, int] = field(default_factory=dict)

    @property
    def file(self) -> str:
        if self.source:
            return os.path.basename(self.source)
        # No "identifier" line (an object file): an anonymous namespace's mangled name holds the
        # file name, as in _GLOBAL__N__95d77a0c_13_batch_norm_cu_04781bdc.
        m = re.search(r"_GLOBAL__N__[0-9a-f]+_\d+_(\w+?)_cu_[0-9a-f]+", self.mangled)
        return f"{m.group(1)}.cu" if m else "?"

    def count(self, predicate) -> int:
        return sum(n for op, n in self.ops.items() if predicate(op))

    def loads(self, width: str) -> int:
        return self.count(lambda op: op.startswith("LDG") and _width(op) == width)

    def stores(self, width: str) -> int:
        return self.count(lambda op: op.startswith("STG") and _width(op) == width)

    @property
    def spills(self) -> int:
        return self.count(lambda op: op.startswith(("LDL", "STL")))

    def warps_per_sm(self, limits: dict, block: int | None = None) -> int:
        block = block or self.block
        warps_per_block = (block + 31) // 32
        per_warp = -(-max(self.regs, 1) * 32 // limits["reg_unit"]) * limits["reg_unit"]
        by_regs = (limits["regs"] // per_warp) // warps_per_block
        if self.shared:
            per_block = -(-(self.shared + limits["smem_reserved"]) // limits["smem_unit"]) * limits["smem_unit"]
            by_smem = limits["smem"] // per_block
        else:
            by_smem = limits["blocks"]
        by_warps = limits["warps"] // warps_per_block
        return min(by_regs, by_smem, by_warps, limits["blocks"]) * warps_per_block


def _width(op: str) -> str:
    parts = op.split(".")
    for w in ("128", "64", "U16", "S16", "U8", "S8"):
        if w in parts:
            return w
    return "32"


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in (os.environ.get("CUDA_BINUTILS_DIR", ""), "/usr/local/cuda/bin",
                   os.path.expanduser("~/.cache/cugrad/cuda-binutils/bin")):
        if folder and os.access(os.path.join(folder, name), os.X_OK):
            return os.path.join(folder, name)
    return None


def _run(cuobjdump: str, args: list[str], binary: str, env: dict) -> str:
    proc = subprocess.run([cuobjdump, *args, binary], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"kernel_audit: {cuobjdump} {' '.join(args)} {binary} failed:\n{proc.stderr}")
    return proc.stdout


def parse(binary: str, arch: str) -> list[Kernel]:
    cuobjdump = _tool("cuobjdump")
    nvdisasm = _tool("nvdisasm")
    if not cuobjdump or not nvdisasm:
        print("kernel_audit: cuobjdump and nvdisasm are needed (CUDA toolkit, or "
              "scripts/fetch_cuda_binutils.sh); set CUDA_BINUTILS_DIR to their folder",
              file=sys.stderr)
        sys.exit(2)
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(nvdisasm) + os.pathsep + env.get("PATH", "")
    kernels: dict[str, Kernel] = {}

    # Resource usage: "identifier = <file>" headers, then "Function <name>:" and a REG line.
    source, current_arch, name = "", "", None
    for line in _run(cuobjdump, ["--dump-resource-usage"], binary, env).splitlines():
        line = line.strip()
        if line.startswith("arch = "):
            current_arch = line.split("=", 1)[1].strip()
        elif line.startswith("identifier = "):
            source = line.split("=", 1)[1].strip()
        elif line.startswith("Fatbin "):
            source = ""
        elif line.startswith("Function ") and current_arch == arch:
            name = line[len("Function "):].rstrip(":")
        elif name and line.startswith("REG:"):
            fields = dict(f.split(":", 1) for f in line.split())
            kernels[name] = Kernel(name, source, int(fields["REG"]), int(fields["SHARED"]),
                                   int(fields["STACK"]), int(fields["LOCAL"]))
            name = None

    # __launch_bounds__: EIATTR_MAX_THREADS in the kernel's .nv.info section (ELF dump).
    current, current_arch, want_value = None, "", False
    for line in _run(cuobjdump, ["-elf"], binary, env).splitlines():
        stripped = line.strip()
        if stripped.startswith("arch = "):
            current_arch = stripped.split("=", 1)[1].strip()
        elif stripped.startswith(".nv.info.") and current_arch == arch:
            current = kernels.get(stripped[len(".nv.info."):])
        elif stripped.startswith(".") and not stripped.startswith(".nv.info."):
            current = None
        elif current is not None and "EIATTR_MAX_THREADS" in stripped:
            want_value = True
        elif want_value and stripped.startswith("Value:"):
            current.block = int(stripped.split()[1], 16)
            want_value = False

    current, current_arch = None, ""
    for line in _run(cuobjdump, ["-sass"], binary, env).splitlines():
        stripped = line.strip()
        if stripped.startswith("arch = "):
            current_arch = stripped.split("=", 1)[1].strip()
        elif stripped.startswith("Function : "):
            current = kernels.get(stripped[len("Function : "):]) if current_arch == arch else None
        elif current is not None:
            m = OPCODE.search(line)
            if m:
                current.ops[m.group(1)] = current.ops.get(m.group(1), 0) + 1
    return sorted(kernels.values(), key=lambda k: (k.file, k.mangled))


def short_name(mangled: str) -> str:
    try:
        text = subprocess.run(["c++filt"], input=mangled, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        text = mangled
    text = text.replace("(anonymous namespace)::", "")
    text = re.sub(r"cugrad::cuda::", "", text)
    text = re.sub(r"^void ", "", text)
    if text.endswith(")"):  # drop the parameter list (the last balanced parentheses)
        depth = 0
        for i in range(len(text) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(text[i], 0)
            if depth == 0:
                text = text[:i]
                break
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="build/libcugrad.so")
    parser.add_argument("--arch", default="sm_90", choices=sorted(ARCH_LIMITS))
    parser.add_argument("--check", action="store_true", help="enforce the fused-kernel rules")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--all", action="store_true", help="list every kernel, not only the fused files")
    args = parser.parse_args()

    kernels = parse(args.binary, args.arch)
    if not kernels:
        print(f"kernel_audit: no {args.arch} kernels in {args.binary}", file=sys.stderr)
        return 1
    limits = ARCH_LIMITS[args.arch]
    shown = kernels if args.all else [k for k in kernels if k.file in FUSED_FILES]

    header = ["file", "kernel", "regs", "smem", "stack", "spill ops", "LDG 128/64/32", "STG 128/64/32",
              "block", "occupancy"]
    rows = []
    for k in shown:
        occ = k.warps_per_sm(limits) / limits["warps"]
        rows.append([k.file, short_name(k.mangled)[:110], str(k.regs), str(k.shared), str(k.stack),
                     str(k.spills), f"{k.loads('128')}/{k.loads('64')}/{k.loads('32')}",
                     f"{k.stores('128')}/{k.stores('64')}/{k.stores('32')}", str(k.block), f"{occ:.0%}"])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"{len(kernels)} {args.arch} kernels in {args.binary}; {len(shown)} shown")

    if not args.check:
        return 0
    failures = []
    for file in FUSED_FILES:
        in_file = [k for k in kernels if k.file == file]
        if not in_file:
            failures.append(f"{file}: no {args.arch} kernels found")
            continue
        if not any(k.loads("128") for k in in_file):
            failures.append(f"{file}: no kernel reads global memory 128 bits at a time")
        for k in in_file:
            name = short_name(k.mangled)
            if k.stack or k.local or k.spills:
                failures.append(f"{file}: {name}: stack {k.stack} B, local {k.local} B, "
                                f"{k.spills} local-memory instructions (spills)")
            if k.warps_per_sm(limits) * 4 < limits["warps"]:
                failures.append(f"{file}: {name}: {k.regs} registers, {k.shared} B shared in blocks of {k.block} leave "
                                f"{k.warps_per_sm(limits)} of {limits['warps']} warps resident")
    for f in failures:
        print("FAIL " + f)
    if failures:
        return 1
    print(f"kernel_audit: the fused kernels of {', '.join(FUSED_FILES)} pass "
          f"(no spills, >= 25% occupancy, 128-bit loads present)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
