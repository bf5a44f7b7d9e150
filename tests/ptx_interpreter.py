"""A small interpreter of the straight-line PTX the kernels inline (``nvfp4lab.kernels._ptx``),
so the CPU suite checks the very text the GPU compiles, on numpy arrays of 32-bit words.

It knows the integer and float instructions those snippets use and fails on any other, so
an edit that brings in a new instruction has to teach it here first."""

from __future__ import annotations

import numpy as np

MASK = np.uint64(0xFFFFFFFF)


def _f32(bits: np.ndarray) -> np.ndarray:
    return (bits & MASK).astype(np.uint32).view(np.float32)


def _bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)


def _prmt(a, b, selector: int):
    pool = [(a >> np.uint64(8 * i)) & np.uint64(0xFF) for i in range(4)]
    pool += [(b >> np.uint64(8 * i)) & np.uint64(0xFF) for i in range(4)]
    out = np.zeros_like(a)
    for i in range(4):
        nibble = (selector >> (4 * i)) & 0xF
        assert nibble < 8, "sign-replicate selectors are not interpreted"
        out |= pool[nibble] << np.uint64(8 * i)
    return out


def _lop3(a, b, c, lut: int):
    """immLut is indexed by the bits of (a, b, c) as in (0xF0, 0xCC, 0xAA): bit 4a + 2b + c."""
    out = np.zeros_like(a)
    one = np.uint64(1)
    for bit in range(32):
        shift = np.uint64(bit)
        index = (((a >> shift) & one) << np.uint64(2)) | (((b >> shift) & one) << one) | ((c >> shift) & one)
        out |= ((np.uint64(lut) >> index) & one) << shift
    return out


def _binary(op: str, x, y):
    if op in ("and.b32",):
        return x & y
    if op == "add.u32":
        return (x + y) & MASK
    if op == "sub.u32":
        return (x - y) & MASK
    if op in ("shl.b32",):
        return (x << y) & MASK
    if op in ("shr.b32", "shr.u32"):
        return x >> y
    if op == "add.rn.f32":  # numpy's float32 addition rounds to nearest even, as add.rn does
        with np.errstate(over="ignore", invalid="ignore"):
            return _bits(_f32(x) + _f32(y))
    if op == "max.f32":  # PTX max.f32 returns the non-NaN operand; the inputs here are numbers
        return _bits(np.fmax(_f32(x), _f32(y)))
    raise AssertionError(f"the PTX interpreter does not know {op!r}: teach it in tests/ptx_interpreter.py")


def run(text: str, inputs: dict[str, np.ndarray], *, skip=("mul.rn.bf16x2",)) -> tuple[dict, list]:
    """Run ``text`` with operand registers ``inputs`` ({"$1": uint32 array, ...}).

    Returns ``(registers, skipped)``: every register's final value (uint64 arrays holding
    32-bit words) and, for instructions named in ``skip``, ``(op, destination, source names,
    source values)`` (None for an operand register the inputs do not give), in program order."""
    regs = {name: np.asarray(v).astype(np.uint64) for name, v in inputs.items()}
    skipped = []

    def value(token: str):
        if token.startswith("$") or token in regs:
            return regs[token]
        if token.startswith("0f"):  # a PTX float literal: its bits in hex
            return np.uint64(int(token[2:], 16))
        return np.uint64(int(token, 0))

    for line in text.splitlines():
        line = line.split("//")[0].strip().rstrip(";")
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, args = line.split(None, 1)
        dst, *src = [a.strip() for a in args.split(",")]
        if op in skip:
            skipped.append((op, dst, src, [regs.get(s) for s in src]))
            continue
        if op == "abs.f32":
            regs[dst] = _bits(np.abs(_f32(value(src[0]))))
        elif op == "prmt.b32":
            regs[dst] = _prmt(value(src[0]), value(src[1]), int(src[2], 0))
        elif op == "lop3.b32":
            regs[dst] = _lop3(value(src[0]), value(src[1]), value(src[2]), int(src[3], 0))
        else:
            regs[dst] = _binary(op, value(src[0]), value(src[1]))
    return regs, skipped
