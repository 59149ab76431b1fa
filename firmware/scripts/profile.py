#!/usr/bin/env python3
"""Instruction mix and estimated Cortex-M4 cycles of a firmware run, per phase and per function.

Runs the firmware ELF under `qemu-system-arm -icount shift=0` with QEMU's translation and
execution log (`-d in_asm,exec,nochain`: every translated block's disassembly, and every block
executed), streamed through a pipe, never stored. Each executed block's instructions are
counted by class and attributed to

- the phase running: load, enroll, prepare, query 0..M-1. The firmware calls
  `stack::repaint` (never inlined) before each phase and `stack::deepest_used` (never
  inlined) after it, so a phase is everything executed between the return from a `repaint`
  and the next `deepest_used`, exactly what its SysTick interval times (checked against the
  ticks the firmware prints);
- the function (ELF symbol) the block belongs to.

Estimated cycles use the Cortex-M4 instruction timings of its Technical Reference Manual
(r0p1, tables 3-1 and 7-1), with zero-wait-state memory: one cycle per data-processing,
multiply or multiply-accumulate instruction (SMLAD, SMLABB, SMULL, MUL; MLA and MLS 2); load
or store 2, or 1 when it follows another single load/store (the TRM's pipelining of
neighbouring loads and stores); LDRD/STRD 3; LDM/STM/PUSH/POP 1 + registers (+2 with PC);
taken branch 3 (1 + a 2-cycle refill), not taken 1; VLDR/VSTR 2; VLDM/VSTM/VPUSH/VPOP
1 + registers; VADD/VSUB/VMUL/VCVT/VMOV/VCMP 1; VFMA/VMLA/VFMS/VMLS/VNMLA 3; VDIV/VSQRT 14;
SDIV/UDIV 7 (2 to 12). Flash wait states are not in the count: see README.md for the
STM32F405 at 168 MHz.

Usage: profile.py ELF [--machine netduinoplus2] [--functions 12]
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import threading

INSN = re.compile(r"^0x([0-9a-f]+):\s+((?:[0-9a-f]{4} )+)\s*(\S+)\s*(.*)$")
TRACE = re.compile(r"^Trace \d+: (0x[0-9a-f]+) \[[0-9a-f]+/([0-9a-f]+)/[0-9a-f]+/[0-9a-f]+\] ?(\S*)")
CONDITIONS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge",
              "lt", "gt", "le", "al")
BRANCHES = {"b", "bl", "bx", "blx", "cbz", "cbnz", "tbb", "tbh"}
SINGLE_MEMORY = {"ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "str", "strb", "strh", "ldrex",
                 "strex", "ldrexb", "strexb"}
FP_MAC = {"vfma", "vfms", "vfnma", "vfnms", "vmla", "vmls", "vnmla", "vnmls"}


def base_mnemonic(mnemonic):
    """`vmovgt.f32` -> `vmov`, `ldrne.w` -> `ldr`, `bne` -> `b`, `smlad` -> `smlad`."""
    m = mnemonic.split(".")[0]
    for c in CONDITIONS:
        if m.endswith(c) and len(m) > len(c):
            stem = m[: -len(c)]
            # A condition suffix only where the stem is a known instruction (`bls` is b+ls,
            # `smlals` is not smla+ls but smlal+s: the S forms come first).
            if stem in BRANCHES or stem in SINGLE_MEMORY or stem.startswith(("v", "mov", "add",
                    "sub", "orr", "and", "ldr", "str", "lsr", "lsl", "cmp", "bx", "mvn", "eor",
                    "pop", "push", "it", "asr", "rsb", "bic", "mul")):
                m = stem
                break
    if m.endswith("s") and m[:-1] in {"add", "sub", "mov", "mvn", "orr", "and", "eor", "lsl",
                                       "lsr", "asr", "rsb", "bic", "adc", "sbc", "mul", "orn",
                                       "ror"}:
        m = m[:-1]
    return m


def registers(operands):
    """Registers in a `{...}` list (`{r4, r5, lr}`, `{s16, s17}`, `{d8, d9}` counts 2 each)."""
    inside = operands[operands.find("{") + 1: operands.find("}")]
    count = 0
    for reg in (r.strip() for r in inside.split(",") if r.strip()):
        if "-" in reg:
            lo, hi = reg.split("-")
            n = int(hi[1:]) - int(lo[1:]) + 1
        else:
            n = 1
        count += 2 * n if reg.startswith("d") else n
    return count


def classify(mnemonic, operands):
    """(class, cycles before branch/pipelining adjustments, is single load/store)."""
    m = base_mnemonic(mnemonic)
    if m in BRANCHES:
        return "branch", 1, False
    if m in ("pop", "ldm", "ldmia", "ldmdb", "push", "stm", "stmia", "stmdb"):
        n = registers(operands)
        extra = 2 if "pc" in operands else 0
        return "ldm/stm/push/pop", 1 + n + extra, False
    if m in ("ldrd", "strd"):
        return "load/store", 3, False
    if m in SINGLE_MEMORY:
        extra = 2 if operands.startswith("pc") else 0
        return "load/store", 2 + extra, True
    if m in ("vldr", "vstr"):
        return "fp load/store", 2, False
    if m in ("vldm", "vldmia", "vldmdb", "vstm", "vstmia", "vstmdb", "vpush", "vpop"):
        return "fp load/store", 1 + registers(operands), False
    if m in FP_MAC:
        return "fp multiply-add", 3, False
    if m in ("vdiv", "vsqrt"):
        return "fp divide/sqrt", 14, False
    if m.startswith("v"):
        return "fp other", 1, False
    if m in ("smlad", "smladx", "smlsd", "smuad", "smusd", "smlabb", "smlabt", "smlatb",
             "smlatt", "smlawb", "smlawt", "smlald", "smlal", "umlal", "smull", "umull",
             "smulbb", "smulbt", "smultb", "smultt", "smmul", "smmla", "mul", "umaal"):
        return "multiply(-accumulate)", 1, False
    if m in ("mla", "mls"):
        return "multiply(-accumulate)", 2, False
    if m in ("sdiv", "udiv"):
        return "divide", 7, False
    if m in ("sxtb16", "sxtab16", "uxtb16", "pkhbt", "pkhtb", "sadd16", "ssub16", "qadd16",
             "ssat", "usat", "ssat16", "sel", "sxtb", "sxth", "uxtb", "uxth", "sxtab", "sxtah"):
        return "dsp pack/extend/saturate", 1, False
    if m in ("bkpt",):
        return "other", 1, False
    return "data processing", 1, False


class Block:
    """A translated block: its instructions' classes and cycles, and where it falls through."""

    __slots__ = ("start", "classes", "cycles", "count", "last_branch", "fallthrough", "symbol")

    def __init__(self, insns, symbol):
        self.start = insns[0][0]
        self.symbol = symbol
        self.count = len(insns)
        self.classes = collections.Counter()
        cycles = 0
        previous_single = False
        for addr, size, mnemonic, operands in insns:
            cls, c, single = classify(mnemonic, operands)
            if single and previous_single:
                c -= 1
            previous_single = single
            self.classes[cls] += 1
            cycles += c
        self.cycles = cycles
        addr, size, mnemonic, operands = insns[-1]
        self.last_branch = classify(mnemonic, operands)[0] == "branch" or (
            "pc" in operands and base_mnemonic(mnemonic) in ("pop", "ldm", "ldr"))
        self.fallthrough = addr + size


def demangle(symbol):
    """A readable name for a legacy-mangled Rust symbol (`_ZN6engine3ops...17h...E`)."""
    if not symbol.startswith("_ZN"):
        return symbol
    parts, s = [], symbol[3:]
    while s and s[0].isdigit():
        n = re.match(r"\d+", s).group()
        s = s[len(n):]
        parts.append(s[: int(n)])
        s = s[int(n):]
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()
    name = "::".join(parts)
    for code, text in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","),
                       ("$RF$", "&"), ("..", "::")):
        name = name.replace(code, text)
    return name


class Phase:
    def __init__(self, name):
        self.name = name
        self.instructions = 0
        self.cycles = 0
        self.classes = collections.Counter()
        self.functions = collections.defaultdict(lambda: [0, 0])


def profile(elf, machine):
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "trace")
        os.mkfifo(fifo)
        qemu = subprocess.Popen(
            ["qemu-system-arm", "-machine", machine, "-nographic", "-semihosting-config",
             "enable=on,target=native", "-icount", "shift=0", "-kernel", elf,
             "-d", "in_asm,exec,nochain", "-D", fifo],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        output = {}
        readers = [threading.Thread(target=lambda k=k, p=p: output.__setitem__(k, p.read()))
                   for k, p in (("stdout", qemu.stdout), ("stderr", qemu.stderr))]
        for r in readers:
            r.start()
        phases, current = [], None
        pending = {}          # translated, not yet executed: pc -> insns
        blocks = {}           # host address -> Block
        by_pc = {}            # pc -> latest Block (fallback)
        insns, symbol = None, ""
        previous = None       # the block executed last (taken-branch check)
        painting = False
        with open(fifo, "r", errors="replace") as log:
            for line in log:
                if line.startswith("IN:"):
                    insns, symbol = [], line[3:].strip()
                    continue
                if insns is not None:
                    m = INSN.match(line)
                    if m:
                        insns.append((int(m.group(1), 16), len(m.group(2).split()) * 2,
                                      m.group(3), m.group(4)))
                        continue
                    if insns:
                        pending[insns[0][0]] = (insns, symbol)
                    insns = None
                if not line.startswith("Trace"):
                    continue
                m = TRACE.match(line)
                if not m:
                    continue
                host, pc, sym = m.group(1), int(m.group(2), 16), m.group(3)
                block = blocks.get(host)
                if pc in pending:
                    block = Block(*pending.pop(pc))
                    blocks[host] = block
                    by_pc[pc] = block
                elif block is None or block.start != pc:
                    block = by_pc.get(pc)
                if block is None:
                    continue
                # The previous block's last branch: taken unless execution fell through.
                if previous is not None and previous.last_branch and current is not None:
                    taken = pc != previous.fallthrough
                    if taken:
                        current.cycles += 2
                        current.functions[previous.symbol][1] += 2
                previous = block
                if "repaint" in sym:
                    painting, current = True, None
                    continue
                if "deepest_used" in sym:
                    painting, current = False, None
                    continue
                if painting:
                    painting = False
                    names = ["load", "enroll", "prepare"]
                    n = len(phases)
                    current = Phase(names[n] if n < 3 else f"query {n - 3}")
                    phases.append(current)
                if current is None:
                    continue
                cycles = block.cycles
                current.instructions += block.count
                current.cycles += cycles
                current.classes.update(block.classes)
                f = current.functions[block.symbol]
                f[0] += block.count
                f[1] += cycles
        qemu.wait()
        for r in readers:
            r.join()
    return phases, output["stdout"], qemu.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("elf")
    parser.add_argument("--machine", default="netduinoplus2")
    parser.add_argument("--functions", type=int, default=12)
    args = parser.parse_args()
    phases, stdout, status = profile(args.elf, args.machine)
    if status != 0:
        sys.exit(f"the firmware exited with {status}:\n{stdout}")
    print(stdout.splitlines()[0])
    # The firmware's own counts, to check the phases against.
    ticks = [int(l.split()[2]) for l in stdout.splitlines()
             if l.split()[:1] in (["load"], ["enroll"], ["prepare"])]
    ticks += [int(l.split()[5]) for l in stdout.splitlines() if l.startswith("query ")]
    per_tick = 40 if args.machine.startswith("mps2") else 1000 / 168
    print("| phase | instructions (trace) | instructions (SysTick) | est. cycles | cycles / instruction |")
    print("| --- | --- | --- | --- | --- |")
    for p, t in zip(phases, ticks):
        print(f"| {p.name} | {p.instructions:,} | {round(t * per_tick):,} | {p.cycles:,} | "
              f"{p.cycles / max(p.instructions, 1):.2f} |")
    queries = phases[3:]
    if not queries:
        return
    q = len(queries)
    total = Phase("per query (mean)")
    for p in queries:
        total.instructions += p.instructions
        total.cycles += p.cycles
        total.classes.update(p.classes)
        for name, (i, c) in p.functions.items():
            total.functions[name][0] += i
            total.functions[name][1] += c
    print(f"\nper query (mean of {q}): {total.instructions / q:,.0f} instructions, "
          f"{total.cycles / q:,.0f} estimated cycles")
    print("\n| class | instructions per query | share |\n| --- | --- | --- |")
    for cls, n in total.classes.most_common():
        print(f"| {cls} | {n / q:,.0f} | {100 * n / total.instructions:.1f}% |")
    print("\n| function | instructions per query | est. cycles per query |\n| --- | --- | --- |")
    ranked = sorted(total.functions.items(), key=lambda kv: -kv[1][0])
    for name, (i, c) in ranked[: args.functions]:
        print(f"| {demangle(name)} | {i / q:,.0f} | {c / q:,.0f} |")


if __name__ == "__main__":
    main()
