#!/usr/bin/env python3
"""Rewrites a CUDA C++ source (.cu) into host C++ for the cugrad CUDA emulator.

usage: cu2cpp.py IN.cu OUT.cpp

Three rewrites, nothing else changes (line numbers are kept, so compiler messages and
debuggers point at the original file through the #line directive):
  * `kernel<<<grid, block[, smem[, stream]]>>>(args)` becomes
    `::cugrad_emu::launch(kernel, grid, block[, smem[, stream]])(args)`;
  * `__shared__ T name[dims];` becomes `static T name[dims]; ::cugrad_emu::shared_declared(...)`
    (blocks run one at a time, so a static is the block's shared memory; it is poisoned once
    per block; `static thread_local` for the race check, see CUGRAD_EMU_SHARED_STORAGE), and `extern __shared__ T name[];` a pointer to the block's dynamic shared memory;
  * `#include <cuda_pipeline_primitives.h>` (device-only) is dropped; cuda_emu.h provides it.
"""
import os
import re
import sys


def find_kernel_start(text, pos):
    """Start of the kernel expression that ends just before text[pos] (the `<<<`)."""
    i = pos
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if text[i - 1] == '>':  # template arguments: walk back to the matching '<'
        depth = 0
        j = i - 1
        while j >= 0:
            c = text[j]
            if c == '>':
                depth += 1
            elif c == '<':
                depth -= 1
                if depth == 0:
                    break
            j -= 1
        if j < 0:
            raise SystemExit(f"cu2cpp: unbalanced template arguments before offset {pos}")
        i = j
        while i > 0 and text[i - 1].isspace():
            i -= 1
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in '_:'):
        i -= 1
    return i


def rewrite_launches(text):
    out = []
    last = 0
    for m in re.finditer(r'<<<', text):
        start = m.start()
        if start < last:
            continue
        end = text.find('>>>', start)
        if end < 0:
            raise SystemExit(f"cu2cpp: '<<<' without '>>>' at offset {start}")
        k = find_kernel_start(text, start)
        kernel = text[k:start].rstrip()
        config = text[start + 3:end]
        after = end + 3
        while after < len(text) and text[after].isspace():
            after += 1
        if after >= len(text) or text[after] != '(':
            raise SystemExit(f"cu2cpp: launch at offset {start} is not followed by an argument list")
        # Keep the newlines of the replaced span, so line numbers stay the same.
        newlines = text[k:after].count('\n') - (kernel + config).count('\n')
        out.append(text[last:k])
        out.append(f"::cugrad_emu::launch({kernel}, {config})" + '\n' * newlines + '(')
        last = after + 1
    out.append(text[last:])
    return ''.join(out)


SHARED = re.compile(r'(?<![\w])__shared__\s+([^;=]+?)\s+(\w+)\s*((?:\[[^\]]*\]\s*)*);')
EXTERN_SHARED = re.compile(r'extern\s+__shared__\s+([^;]+?)\s+(\w+)\s*\[\s*\]\s*;')


def rewrite_shared(text):
    text = EXTERN_SHARED.sub(
        lambda m: f"{m.group(1)}* const {m.group(2)} = ::cugrad_emu::dynamic_shared<{m.group(1)}>();", text)
    return SHARED.sub(
        lambda m: (f"CUGRAD_EMU_SHARED_STORAGE {m.group(1)} {m.group(2)}{m.group(3)}; "
                   f"::cugrad_emu::shared_declared(&{m.group(2)}, sizeof({m.group(2)}));"), text)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding='utf-8') as f:
        text = f.read()
    text = re.sub(r'#include\s*<cuda_pipeline_primitives\.h>', '', text)
    text = rewrite_launches(text)
    text = rewrite_shared(text)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    header = f'#include "tests/emu/cuda_emu.h"\n#line 1 "{src}"\n'
    with open(dst, 'w', encoding='utf-8') as f:
        f.write(header + text)


if __name__ == '__main__':
    main()
