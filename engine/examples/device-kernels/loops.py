"""Inner loops of functions in `llvm-objdump -d -C --no-show-raw-insn` output: for each backward
branch inside a function whose name contains one of the arguments, the instructions from the
branch target to the branch, counted by mnemonic (docs/arm-kernels.md).

    python3 loops.py DISASSEMBLY.txt NAME_PART [NAME_PART ...]
"""
import collections
import re
import sys

text = open(sys.argv[1]).read().split('\n')
pats = sys.argv[2:]
funcs = {}
cur = None
for line in text:
    m = re.match(r'^([0-9a-f]+) <(.*)>:$', line)
    if m:
        cur = m.group(2); funcs[cur] = []; continue
    m = re.match(r'^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$', line)
    if m and cur:
        funcs[cur].append((int(m.group(1), 16), m.group(2), m.group(3)))
for name, ins in funcs.items():
    if not any(p in name for p in pats): continue
    for i, (addr, op, args) in enumerate(ins):
        if op.startswith('b') and not op.startswith('bl') and not op.startswith('bic'):
            t = re.match(r'0x([0-9a-f]+)', args)
            if not t: continue
            target = int(t.group(1), 16)
            if target < addr and target >= ins[0][0]:
                body = [x for x in ins if target <= x[0] <= addr]
                c = collections.Counter(re.sub(r'\.w$', '', x[1]) for x in body)
                print(f"{name}\n  loop {target:#x}..{addr:#x}: {len(body)} instructions: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])))
