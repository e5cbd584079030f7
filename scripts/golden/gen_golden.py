#!/usr/bin/env python3
"""Golden vectors for qdiff, produced by the real quantization frameworks.

Every number in the output comes from a framework's own function: gguf-py's numpy
quantizers (`gguf.quants`), MLX's `mx.quantize`/`mx.dequantize` (Linux CPU build),
torchao's `IntxUnpackedToInt8Tensor.from_hp` / `choose_qparams_affine` /
`quantize_affine` / `dequantize_affine`, and coremltools' numpy compression helpers
(`linear_quantize_weights.blockwise_compress_by_dtype`, `palettize_weights.blockwise_compress`,
the iOS18 MIL ops' `decompress`). Nothing here re-implements a quantization formula:
this file only builds inputs, calls the frameworks, and writes down what they return.

Output: tests/golden/{ggml,mlx,torchao,coremltools}.json (format: tests/golden/README.md).
After writing, every file is re-loaded and checked (shapes, finiteness, and that
`dequant` equals what the framework's own dequantize returns from the stored
q / scales / zero-points / packed bytes, and that re-quantizing the input reproduces it).

Usage (see scripts/golden/README.md):
    python scripts/golden/gen_golden.py [--out tests/golden] [--only ggml,mlx,torchao,coremltools]
    python scripts/golden/gen_golden.py --check-only
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import math
import os
import platform
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
GENERATOR = "scripts/golden/gen_golden.py"
SOURCES = ("ggml", "ggml-c", "mlx", "torchao", "coremltools")

warnings.filterwarnings("ignore")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


# ---------------------------------------------------------------------------------------------
# small helpers (JSON encoding, dtype rounding of inputs)
# ---------------------------------------------------------------------------------------------

def f32list(a) -> list:
    a = np.asarray(a, dtype=np.float32).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError("non-finite value in a golden array")
    return [float(v) for v in a]


def intlist(a) -> list:
    a = np.asarray(a)
    assert np.issubdtype(a.dtype, np.integer) or np.all(a == np.round(a)), a.dtype
    return [int(v) for v in a.ravel()]


def hexbytes(a) -> str:
    return np.ascontiguousarray(a).tobytes().hex()


def seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def to_bf16_exact(x: np.ndarray) -> np.ndarray:
    """Round f32 values to bf16 (torch's RNE conversion) and back: inputs for @bf16 schemes."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(torch.bfloat16).to(torch.float32).numpy()


def to_f16_exact(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def round_input(x: np.ndarray, dt: str) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if dt == "f32":
        return x.copy()
    if dt == "f16":
        return to_f16_exact(x)
    if dt == "bf16":
        return to_bf16_exact(x)
    raise ValueError(dt)


def exact_in(x: np.ndarray, dt: str) -> np.ndarray:
    """Assert that constructed (tie) inputs are exactly representable in dt, so ties stay ties."""
    x = np.asarray(x, np.float32)
    r = round_input(x, dt)
    assert np.array_equal(r.view(np.uint32), x.view(np.uint32)), f"tie input not exact in {dt}"
    return x


def scheme_name(base: str, dt: str) -> str:
    return base if dt == "f32" else f"{base}@{dt}"


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

EDGE_CASES = (
    "zero", "const+", "const-", "allneg",
    "allpos", "outlier+", "outlier-", "pm-pair",
    "mp-pair", "negzero-all", "negzero-mix", "tiny",
)
# a smaller set (keeps the JSON small) for the @f16/@bf16 variants, G = 64 and per-tensor schemes
CORE_EDGE_CASES = (
    "zero", "const+", "allneg", "allpos",
    "outlier-", "mp-pair", "negzero-all", "tiny",
)


def edge_group(case: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One group (or one per-channel row) of n values showing one edge case."""
    if case == "zero":
        g = np.zeros(n)
    elif case == "const+":
        g = np.full(n, 0.3)
    elif case == "const-":
        g = np.full(n, -0.7)
    elif case == "allneg":
        g = -rng.uniform(0.01, 0.1, n)
    elif case == "allpos":
        g = rng.uniform(0.01, 0.1, n)
    elif case in ("outlier+", "outlier-"):
        g = rng.normal(0.0, 0.05, n)
        g[3] = 1.5 if case == "outlier+" else -1.5
    elif case in ("pm-pair", "mp-pair"):
        # [+a, -a] in one group: the side seen first matters for ggml q4_0 / MLX
        g = rng.normal(0.0, 0.02, n)
        a = 0.2 if case == "pm-pair" else -0.2
        g[2], g[9] = a, -a
    elif case == "negzero-all":
        g = np.full(n, -0.0)
    elif case == "negzero-mix":
        g = rng.normal(0.0, 0.05, n)
        g[0::3] = -0.0
    elif case == "tiny":
        g = rng.normal(0.0, 1.0, n)
        g = g / np.abs(g).max() * 1e-5
    else:
        raise ValueError(case)
    if case not in ("tiny", "const+", "const-"):
        # snap to multiples of 2^-10: the structure is what matters here, and short decimals
        # keep the JSON small (the "normal" vectors carry full-precision f32 weights).
        # np.round keeps the sign of a value that snaps to zero (-0.0 stays -0.0).
        g = np.round(np.asarray(g, np.float64) * 1024) / 1024
    return np.asarray(g, np.float32)


def edge_vectors(G: int, per_row: bool, dt: str, seed: int, core: bool = False):
    """Edge cases laid out as groups. per_row: one case per row (per-channel / per-token schemes,
    K = G); else two groups (cases) per row of 2*G columns. Split into vectors of <= 4 rows.
    core: only CORE_EDGE_CASES."""
    rng = np.random.default_rng(seed)
    cases = CORE_EDGE_CASES if core else EDGE_CASES
    groups = [round_input(edge_group(c, G, rng), dt) for c in cases]
    per = 1 if per_row else 2
    rows = [np.concatenate(groups[i:i + per]) for i in range(0, len(groups), per)]
    out = []
    for vi, start in enumerate(range(0, len(rows), 4)):
        chunk = rows[start:start + 4]
        names = cases[start * per:(start + len(chunk)) * per]
        out.append((f"edges-{'abc'[vi]}", np.stack(chunk), names))
    return out


def normal_vector(rows: int, cols: int, dt: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return round_input(rng.normal(0.0, 0.05, (rows, cols)).astype(np.float32), dt)


def tie_fill(center_vals, n, first=()):
    """A group of n values: `first` (fixed extremes) followed by center_vals cycled."""
    vals = list(first)
    i = 0
    while len(vals) < n:
        vals.append(center_vals[i % len(center_vals)])
        i += 1
    return np.asarray(vals, np.float32)


def half_steps(s, ks):
    return [(k + 0.5) * s for k in ks]


# ---------------------------------------------------------------------------------------------
# gguf-py (ggml file-format quantizers in numpy)
# ---------------------------------------------------------------------------------------------

def ggml_qtype(scheme):
    from gguf import GGMLQuantizationType as T

    return {"q4_0": T.Q4_0, "q4_0-py": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0, "q4_K": T.Q4_K}[scheme]


def ggml_decode(scheme: str, packed: np.ndarray, dequant) -> dict:
    """Stored d (and m), codes and dequant of q4_0/q4_1/q8_0 blocks [rows, nbytes], all read
    through the framework's own dequantizer `dequant` (codes: the same blocks with d = 1, m = 0)."""
    ts = {"q4_0": 18, "q4_0-py": 18, "q4_1": 20, "q8_0": 34}[scheme]
    rows = packed.shape[0]
    blocks = packed.reshape(rows, -1, ts)
    deq = dequant(packed).astype(np.float32)
    d = np.ascontiguousarray(blocks[..., 0:2]).view(np.float16)[..., 0].astype(np.float32)
    unit = blocks.copy()
    unit[..., 0:2] = np.array([1.0], np.float16).view(np.uint8)
    zp = None
    if scheme == "q4_1":
        zp = np.ascontiguousarray(blocks[..., 2:4]).view(np.float16)[..., 0].astype(np.float32)
        unit[..., 2:4] = np.array([0.0], np.float16).view(np.uint8)
    q = dequant(unit.reshape(rows, -1))
    assert np.all(q == np.round(q))
    return dict(q=q.astype(np.int64), scales=d, zero_points=zp, dequant=deq, packed=packed)


def ggml_quantize(scheme: str, x: np.ndarray) -> dict:
    from gguf import quants

    qt = ggml_qtype(scheme)
    packed = quants.quantize(np.ascontiguousarray(x, np.float32), qt)   # uint8 [rows, nb*ts]
    return ggml_decode(scheme, packed, lambda b: quants.dequantize(b, qt))


def ggml_ties(scheme: str) -> np.ndarray:
    if scheme in ("q4_0", "q4_0-py"):
        # max-|x| element -0.25 -> d = max/-8 = 1/32, id = 32: x*id + 8.5 lands exactly on integers
        s = 1 / 32
        t = half_steps(s, range(-8, 7))
        g0 = tie_fill(t, 32, first=[-0.25])
        g1 = tie_fill([-v for v in t], 32, first=[0.25])               # positive max: d < 0
        g2 = tie_fill(t, 32, first=[0.0, 0.125, 0.25, -0.25])          # +a first, then -a: clipped
        g3 = tie_fill(half_steps(1 / 64, range(-8, 7)), 32, first=[-0.125, 0.125])
        return np.stack([np.concatenate([g0, g1]), np.concatenate([g2, g3])])
    if scheme == "q4_1":
        # min -0.5, max = min + 15/32 -> d = 1/32 exactly; (x - min)*id + 0.5 is an integer
        def grp(mn, s):
            return tie_fill([mn + v for v in half_steps(s, range(0, 15))], 32, first=[mn, mn + 15 * s])
        return np.stack([np.concatenate([grp(-0.5, 1 / 32), grp(0.125, 1 / 32)]),
                         np.concatenate([grp(-0.25, 1 / 64), grp(-1.0, 1 / 16)])])
    if scheme == "q8_0":
        # amax = 127/128 -> d = amax/127 = 1/128 exactly, id = 128: x*id = k + 0.5
        def grp(amax_sign, s):
            ks = [-127, -64, -3, -2, -1, 0, 1, 2, 3, 63, 126, -100, 100, -9, 9]
            return tie_fill(half_steps(s, ks), 32, first=[amax_sign * 127 * s])
        return np.stack([np.concatenate([grp(1, 1 / 128), grp(-1, 1 / 128)]),
                         np.concatenate([grp(1, 1 / 1024), grp(-1, 1 / 16)])])
    raise ValueError(scheme)


def ggml_q4k_blocks() -> np.ndarray:
    """Two Q4_K super-blocks of fixed pseudo-random bytes (gguf-py has no Q4_K quantizer)."""
    rng = np.random.default_rng(seed_of("q4_K"))
    out = []
    for r in range(2):
        d = np.array([rng.uniform(2e-4, 2e-3)], np.float16)
        dmin = np.array([rng.uniform(1e-4, 1e-3)], np.float16)
        scales = rng.integers(0, 256, 12, dtype=np.uint8)
        if r == 1:
            scales[:] = 0xFF            # every 6-bit sc and m = 63 (the extremes)
            scales[3] = 0x00            # ... except sub-block 3: sc = m = 0 (and top bits of 7)
        qs = rng.integers(0, 256, 128, dtype=np.uint8)
        out.append(np.concatenate([d.view(np.uint8), dmin.view(np.uint8), scales, qs]))
    return np.stack(out)


def q4k_unpack(blocks: np.ndarray, dequant) -> dict:
    """Codes, effective scales/mins and raw fields of Q4_K blocks [rows, 144], all obtained by
    running the framework's own Q4_K dequantizer (`dequant`) on doctored copies of the blocks."""
    from gguf.quants import Q4_K

    rows = blocks.shape[0]
    deq = dequant(blocks)
    f16 = lambda v: np.array([v], np.float16).view(np.uint8)
    # codes: d = 1, dmin = 0, every sc = 1 and m = 0  ->  dequant returns q itself
    unit = blocks.copy()
    unit[:, 0:2] = f16(1.0)
    unit[:, 2:4] = f16(0.0)
    unit[:, 4:8] = 1
    unit[:, 8:12] = 0
    unit[:, 12:16] = 0x01
    q = dequant(unit)
    # effective sub-block scales d*sc: dmin = 0 and every code 1
    a = blocks.copy()
    a[:, 2:4] = f16(0.0)
    a[:, 16:] = 0x11
    eff_scale = dequant(a).reshape(rows, 8, 32)[:, :, 0]
    # effective mins dmin*m: every code 0 -> dequant = -(dmin*m)
    b = blocks.copy()
    b[:, 16:] = 0x00
    eff_min = -dequant(b).reshape(rows, 8, 32)[:, :, 0] + np.float32(0.0)  # -(+0) -> +0
    sc, m = Q4_K.get_scale_min(np.ascontiguousarray(blocks[:, 4:16]))
    raw = {
        "d": f32list(np.ascontiguousarray(blocks[:, 0:2]).view(np.float16).astype(np.float32)),
        "dmin": f32list(np.ascontiguousarray(blocks[:, 2:4]).view(np.float16).astype(np.float32)),
        "sc": intlist(sc), "m": intlist(m), "sc_shape": [rows, 8],
    }
    assert np.all(q == np.round(q))
    return dict(q=q.astype(np.int64), scales=eff_scale, zero_points=eff_min,
                dequant=deq.astype(np.float32), packed=blocks, raw=raw)


def ggml_q4k_vector() -> dict:
    from gguf import quants

    qt = ggml_qtype("q4_K")
    return q4k_unpack(ggml_q4k_blocks(), lambda b: quants.dequantize(b, qt).astype(np.float32))


def ggml_inputs(scheme: str) -> list:
    seed = seed_of(scheme)
    inputs = [("normal", normal_vector(2, 64, "f32", seed))]
    inputs += [(n, x) for n, x, _ in edge_vectors(32, False, "f32", seed + 1)]
    inputs.append(("ties", exact_in(ggml_ties(scheme), "f32")))
    return inputs


def gen_ggml() -> dict:
    vectors = []
    for scheme in ("q4_0", "q4_1", "q8_0"):
        for kind, x in ggml_inputs(scheme):
            r = ggml_quantize(scheme, x)
            # gguf-py's Q4_0 differs from C ggml in the sign of d for an all-zero block that
            # starts with -0.0; qdiff names that producer `q4_0-py`.
            name = "q4_0-py" if scheme == "q4_0" else scheme
            vectors.append(make_vector(f"{name}/{kind}", name, x, r))
    r = ggml_q4k_vector()
    v = make_vector("q4_K/dequant-only-random-blocks", "q4_K", r["dequant"], r)
    v["dequant_only"] = True
    v["expected"]["raw"] = r["raw"]
    vectors.append(v)
    return doc("gguf-py", {"gguf": md.version("gguf")}, vectors)


# ---------------------------------------------------------------------------------------------
# C ggml (the ggml library bundled in ggml-python, compiled from source by pip)
# ---------------------------------------------------------------------------------------------

GGMLC_TYPES = {"q4_0": "GGML_TYPE_Q4_0", "q4_1": "GGML_TYPE_Q4_1", "q8_0": "GGML_TYPE_Q8_0",
               "q4_K": "GGML_TYPE_Q4_K", "a8-q8_0-avx": "GGML_TYPE_Q8_0"}


def ggmlc():
    import ggml

    if not getattr(ggmlc, "_init", False):
        if hasattr(ggml, "ggml_cpu_init"):
            ggml.ggml_cpu_init()
        ggmlc._init = True
    return ggml


def _fptr(a):
    import ctypes

    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def _vptr(a):
    import ctypes

    return a.ctypes.data_as(ctypes.c_void_p)


def ggmlc_dequant(scheme: str, blocks: np.ndarray) -> np.ndarray:
    """ggml's own dequantize_row_* (type_traits.to_float)."""
    g = ggmlc()
    tr = g.ggml_get_type_traits(getattr(g, GGMLC_TYPES[scheme])).contents
    b = np.ascontiguousarray(blocks, np.uint8)
    n = b.size // tr.type_size * tr.blck_size
    out = np.zeros(n, np.float32)
    tr.to_float(_vptr(b), _fptr(out), n)
    return out.reshape(blocks.shape[0], -1)


def ggmlc_quantize(scheme: str, x: np.ndarray) -> dict:
    """q4_0/q4_1/q8_0/q4_K: ggml_quantize_chunk (no imatrix -> quantize_row_*_ref, the file
    format). a8-q8_0-avx: the CPU backend's quantize_row_q8_0 (type_traits_cpu.from_float, the
    x86 AVX2 build: id = 127/amax, round-to-nearest-even), which quantizes activations."""
    g = ggmlc()
    t = getattr(g, GGMLC_TYPES[scheme])
    tr = g.ggml_get_type_traits(t).contents
    x = np.ascontiguousarray(x, np.float32)
    rows, cols = x.shape
    dst = np.zeros(rows * (cols // tr.blck_size) * tr.type_size, np.uint8)
    if scheme == "a8-q8_0-avx":
        assert g.ggml_cpu_has_avx2(), "a8-q8_0-avx needs the AVX2 build of ggml-cpu"
        g.ggml_get_type_traits_cpu(t).contents.from_float(_fptr(x), _vptr(dst), x.size)
    else:
        n = g.ggml_quantize_chunk(t, _fptr(x), _vptr(dst), 0, rows, cols, None)
        assert n == dst.size
    packed = dst.reshape(rows, -1)
    if scheme == "q4_K":
        return q4k_unpack(packed, lambda b: ggmlc_dequant("q4_K", b))
    return ggml_decode("q8_0" if scheme == "a8-q8_0-avx" else scheme, packed,
                       lambda b: ggmlc_dequant(scheme, b))


def q4k_inputs() -> list:
    seed = seed_of("q4_K")
    rng = np.random.default_rng(seed + 2)
    sub = np.stack([rng.normal(0.0, 0.05 * 2.0 ** (j - 4), 32) for j in range(8)]).ravel()
    shifted = np.stack([rng.normal(0.1 * (j - 3.5) / 3.5, 0.02, 32) for j in range(8)]).ravel()
    rng = np.random.default_rng(seed + 1)
    core = np.concatenate([edge_group(c, 32, rng) for c in CORE_EDGE_CASES])
    edges = np.stack([core, np.zeros(256), np.full(256, 0.3), np.full(256, -0.0)])
    return [
        ("normal", normal_vector(2, 256, "f32", seed)),
        ("subblock-scales", np.stack([sub, shifted]).astype(np.float32)),
        ("edges-a", edges.astype(np.float32)),
    ]


def gen_ggmlc() -> dict:
    vectors = []
    differ = []
    for scheme in ("q4_0", "q4_1", "q8_0"):
        # the gguf-py inputs; keep edges-b (all -0.0 block) and any vector whose bytes differ
        for kind, x in ggml_inputs(scheme):
            r = ggmlc_quantize(scheme, x)
            same = np.array_equal(r["packed"], ggml_quantize(scheme, x)["packed"])
            if not same:
                differ.append(f"{scheme}/{kind}")
            if kind == "edges-b" or not same:
                vectors.append(make_vector(f"{scheme}/{kind}", scheme, x, r))
    for kind, x in q4k_inputs():
        r = ggmlc_quantize("q4_K", x)
        # cross-check: gguf-py's numpy Q4_K dequantizer reads the C blocks the same way
        from gguf import quants

        assert bits_equal(quants.dequantize(r["packed"], ggml_qtype("q4_K")), r["dequant"])
        v = make_vector(f"q4_K/{kind}", "q4_K", x, r)
        v["expected"]["raw"] = r["raw"]
        vectors.append(v)
    seed = seed_of("a8-q8_0-avx")
    inputs = [("normal", normal_vector(2, 64, "f32", seed))]
    inputs += [(n, x) for n, x, _ in edge_vectors(32, False, "f32", seed + 1, True)]
    inputs.append(("ties", exact_in(ggml_ties("q8_0"), "f32")))
    for kind, x in inputs:
        r = ggmlc_quantize("a8-q8_0-avx", x)
        vectors.append(make_vector(f"a8-q8_0-avx/{kind}", "a8-q8_0-avx", x, r))
    print("ggml-c: q4_0/q4_1/q8_0 vectors whose bytes differ from gguf-py:", differ or "none")
    return doc("ggml-c", {"ggml-python": md.version("ggml-python"), "ggml": ggmlc_version()}, vectors)


def ggmlc_version() -> str:
    g = ggmlc()
    return g.ggml_version().decode() if hasattr(g, "ggml_version") else "unknown"


# ---------------------------------------------------------------------------------------------
# MLX (mlx-cpu wheel: Linux, CPU backend)
# ---------------------------------------------------------------------------------------------

def mlx_dtype(dt):
    import mlx.core as mx

    return {"f32": mx.float32, "f16": mx.float16, "bf16": mx.bfloat16}[dt]


def mlx_quantize(x: np.ndarray, bits: int, G: int, dt: str) -> dict:
    import mlx.core as mx

    with mx.stream(mx.cpu):
        w = mx.array(x).astype(mlx_dtype(dt))
        wq, s, b = mx.quantize(w, group_size=G, bits=bits)
        deq = mx.dequantize(wq, s, b, group_size=G, bits=bits)
        # codes: MLX's own unpacking, dequantize with scale 1 and bias 0 in f32
        one = mx.ones(s.shape, dtype=mx.float32)
        zero = mx.zeros(b.shape, dtype=mx.float32)
        qf = mx.dequantize(wq, one, zero, group_size=G, bits=bits)
        mx.eval(wq, s, b, deq, qf)
    assert deq.dtype == mlx_dtype(dt) and s.dtype == mlx_dtype(dt)
    q = np.array(qf)
    assert np.all(q == np.round(q))
    wq_np = np.array(wq).astype("<u4")
    return dict(q=q.astype(np.int64),
                scales=np.array(s.astype(mx.float32)), zero_points=np.array(b.astype(mx.float32)),
                dequant=np.array(deq.astype(mx.float32)), packed=wq_np)


def mlx_ties(bits: int, G: int) -> np.ndarray:
    """Groups whose nudged scale stays an exact power of two, so (w - bias)/s hits k + 0.5."""
    n = (1 << bits) - 1
    s = 2.0 ** -(bits + 2)
    m = n // 2 + 1                                   # |edge| dominates the other extreme

    def grp(wmin, wmax, from_min):
        k = list(range(0, n, max(1, n // (G - 2))))
        if from_min:
            t = [wmin + (j + 0.5) * s for j in k]
        else:
            t = [wmax - (j + 0.5) * s for j in k]
        return tie_fill(t, G, first=[wmin, wmax])

    g0 = grp(-m * s, (n - m) * s, True)              # min side dominates: s > 0, bias = wmin
    g1 = grp(-(n - m) * s, m * s, False)             # max side dominates: s < 0, bias = wmax
    g2 = grp(-n * s, 0.0, True)                      # all <= 0
    g3 = grp(s, (n + 1) * s, False)                  # all positive
    return np.stack([np.concatenate([g0, g1]), np.concatenate([g2, g3])])


MLX_SCHEMES = [  # (bits, G, dtype)
    (4, 32, "f32"), (4, 64, "f32"), (8, 32, "f32"), (8, 64, "f32"),
    (2, 32, "f32"), (3, 32, "f32"),
    (4, 32, "f16"), (4, 32, "bf16"),
]


def gen_mlx() -> dict:
    vectors = []
    for bits, G, dt in MLX_SCHEMES:
        base = f"w{bits}g{G}-mlx-cpu"
        scheme = scheme_name(base, dt)
        seed = seed_of(scheme)
        inputs = [("normal", normal_vector(2, 2 * G, dt, seed))]
        core = dt != "f32" or G != 32
        inputs += [(n, x) for n, x, _ in edge_vectors(G, False, dt, seed + 1, core)]
        inputs.append(("ties", exact_in(mlx_ties(bits, G), dt)))
        for kind, x in inputs:
            r = mlx_quantize(x, bits, G, dt)
            vectors.append(make_vector(f"{scheme}/{kind}", scheme, x, r))
    return doc("mlx-cpu", {"mlx": md.version("mlx"), "mlx-cpu": md.version("mlx-cpu")}, vectors)


# ---------------------------------------------------------------------------------------------
# torchao
# ---------------------------------------------------------------------------------------------

def torch_dtype(dt):
    import torch

    return {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dt]


def t2np(t) -> np.ndarray:
    import torch

    if t.dtype.is_floating_point:
        return t.detach().to(torch.float32).numpy()
    return t.detach().to(torch.int64).numpy()


# base scheme -> (kind, target dtype name, mapping, group size or None for per-row)
TORCHAO_SCHEMES = {
    "w4g32-sym-ao": ("weight", "int4", "SYMMETRIC", 32),
    "w4g32-sym-nce-ao": ("weight", "int4", "SYMMETRIC_NO_CLIPPING_ERR", 32),
    "w4g32-asym-ao": ("weight", "int4", "ASYMMETRIC", 32),
    "w8pc-sym-ao": ("weight", "int8", "SYMMETRIC", None),
    "a8-pt-asym-ao": ("act", "int8", "ASYMMETRIC", None),
}


def torchao_quantize(base: str, x: np.ndarray, dt: str) -> dict:
    import torch
    from torchao.quantization.quant_primitives import (
        MappingType, choose_qparams_affine, quantize_affine, dequantize_affine)
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor, _apply_int8_act_asym_per_token_quant_dequant)
    from torchao.quantization.utils import _get_per_token_block_size

    kind, tname, mapping, G = TORCHAO_SCHEMES[base]
    hp = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(torch_dtype(dt))
    rows, cols = x.shape
    if kind == "weight":
        target = {"int4": torch.int4, "int8": torch.int8}[tname]
        block = (1, G if G else cols)
        t = IntxUnpackedToInt8Tensor.from_hp(hp, block, target, mapping_type=MappingType[mapping])
        assert t.qdata.dtype == torch.int8 and t.scale.dtype == hp.dtype
        q, s, zp = t.qdata, t.scale, t.zero_point
        deq = t.dequantize()
    else:
        # exactly the steps of _apply_int8_act_asym_per_token_quant_dequant (eps default)
        block = _get_per_token_block_size(hp)
        s, zp = choose_qparams_affine(hp, MappingType.ASYMMETRIC, block, target_dtype=torch.int8,
                                      quant_min=-128, quant_max=127, zero_point_dtype=torch.int8)
        q = quantize_affine(hp, block, s, zp, output_dtype=torch.int8, quant_min=-128, quant_max=127)
        deq = dequantize_affine(q, block, s, zp, torch.int8, -128, 127, output_dtype=hp.dtype)
        ref = _apply_int8_act_asym_per_token_quant_dequant(hp)
        assert torch.equal(ref.view(torch.int16 if ref.element_size() == 2 else torch.int32),
                           deq.view(torch.int16 if deq.element_size() == 2 else torch.int32))
        s, zp = s.reshape(rows, 1), zp.reshape(rows, 1)
    assert deq.dtype == hp.dtype
    ngroups = cols // G if G else 1
    s_np = t2np(s).reshape(rows, ngroups)
    zp_np = t2np(zp).reshape(rows, ngroups)
    if mapping != "ASYMMETRIC":
        assert np.all(zp_np == 0)
        zp_np = None
    return dict(q=t2np(q), scales=s_np, zero_points=zp_np, dequant=t2np(deq))


def torchao_ties(base: str) -> np.ndarray:
    if base == "w4g32-sym-ao":
        # amax = 7.5/32 -> s = amax/7.5 = 1/32 exactly, 1/s = 32: x*(1/s) = k + 0.5
        def grp(s, sign):
            a = 7.5 * s
            return tie_fill(half_steps(s, range(-8, 7)), 32, first=[sign * a, -sign * a])
        return np.stack([np.concatenate([grp(1 / 32, 1), grp(1 / 32, -1)]),
                         np.concatenate([grp(1 / 64, 1), grp(1 / 256, -1)])])
    if base == "w4g32-sym-nce-ao":
        # s = max(mn/-8, mx/7) = 1/32 (from the min side in g0, from the max side in g1)
        s = 1 / 32
        g0 = tie_fill(half_steps(s, range(-8, 6)), 32, first=[-8 * s, 0.2])
        g1 = tie_fill(half_steps(s, range(-3, 7)), 32, first=[-0.1, 7 * s])
        g2 = tie_fill(half_steps(s / 2, range(-8, 7)), 32, first=[-8 * s / 2, 7 * s / 2])
        g3 = tie_fill(half_steps(s, range(-8, 7)), 32, first=[-8 * s, 7 * s])
        return np.stack([np.concatenate([g0, g1]), np.concatenate([g2, g3])])
    if base == "w4g32-asym-ao":
        # mn, mx multiples of s with mx - mn = 15 s -> s exact; zp = -8 - rne(mn/s), odd or even
        def grp(lo, s):       # lo = mn/s (integer <= 0)
            mn, mx = lo * s, (lo + 15) * s
            return tie_fill(half_steps(s, range(lo, lo + 15)), 32, first=[mn, mx])
        return np.stack([np.concatenate([grp(-3, 1 / 32), grp(-7, 1 / 32)]),
                         np.concatenate([grp(-10, 1 / 64), grp(0, 1 / 32)])])
    if base == "w8pc-sym-ao":
        # amax = 127.5/128 -> s = 1/128 exactly
        ks = list(range(-128, 127, 4)) + [-1, 0, 1, 2, 125, 126]
        r0 = tie_fill(half_steps(1 / 128, ks), 64, first=[127.5 / 128, -127.5 / 128])
        r1 = tie_fill(half_steps(1 / 256, ks[::-1]), 64, first=[-127.5 / 256])
        return np.stack([r0, r1])
    if base == "a8-pt-asym-ao":
        # mn = lo/256, mx = (lo+255)/256 -> s = 1/256, zp = -128 - lo; ties (k + 0.5)/256 kept
        # within 8 significant bits so that the same row is exact in bf16
        def row(lo):
            ks = [k for k in range(lo, lo + 255) if abs(2 * k + 1) < 256][::3]
            return tie_fill(half_steps(1 / 256, ks), 64, first=[lo / 256, (lo + 255) / 256])
        return np.stack([row(-37), row(-101)])
    raise ValueError(base)


TORCHAO_VARIANTS = [
    ("w4g32-sym-ao", "f32"), ("w4g32-sym-nce-ao", "f32"), ("w4g32-asym-ao", "f32"),
    ("w8pc-sym-ao", "f32"), ("a8-pt-asym-ao", "f32"),
    ("w4g32-sym-ao", "bf16"), ("w4g32-asym-ao", "bf16"), ("w8pc-sym-ao", "bf16"),
    ("a8-pt-asym-ao", "bf16"),
    ("w4g32-sym-ao", "f16"), ("a8-pt-asym-ao", "f16"),
]


def gen_torchao() -> dict:
    import torch

    torch.manual_seed(0)
    vectors = []
    for base, dt in TORCHAO_VARIANTS:
        scheme = scheme_name(base, dt)
        seed = seed_of(scheme)
        G = TORCHAO_SCHEMES[base][3]
        per_row = G is None
        inputs = [("normal", normal_vector(2, 64, dt, seed))]
        inputs += [(n, x) for n, x, _ in edge_vectors(G or 32, per_row, dt, seed + 1, dt != "f32")]
        inputs.append(("ties", exact_in(torchao_ties(base), dt)))
        for kind, x in inputs:
            r = torchao_quantize(base, x, dt)
            vectors.append(make_vector(f"{scheme}/{kind}", scheme, x, r))
    return doc("torchao", {"torch": md.version("torch"), "torchao": md.version("torchao"),
                           "torchao-eps-default": torchao_eps_default()}, vectors)


def torchao_eps_default() -> str:
    """Which default eps the installed torchao uses (schemes.md 1.2), asked of torchao itself:
    the SYMMETRIC scale of an all-zero fp16 block is exactly the default eps."""
    import torch
    from torchao.quantization.quant_primitives import MappingType, choose_qparams_affine

    s, _ = choose_qparams_affine(torch.zeros(1, 32, dtype=torch.float16), MappingType.SYMMETRIC,
                                 (1, 32), torch.int8, -8, 7)
    s = float(s.reshape(-1)[0])
    if s == torch.finfo(torch.float16).smallest_normal:
        return "torch.finfo(input.dtype).smallest_normal"
    if s == torch.finfo(torch.float16).eps:
        return "torch.finfo(input.dtype).eps"
    return f"unknown (fp16 all-zero block scale {s!r})"


# ---------------------------------------------------------------------------------------------
# coremltools (numpy compression helpers used by the optimize.coreml passes)
# ---------------------------------------------------------------------------------------------

# base -> (mode, dtype name, group size or None = per-channel)
COREML_SCHEMES = {
    "w8pc-symclip": ("LINEAR_SYMMETRIC", "int8", None),
    "w4g32-symclip": ("LINEAR_SYMMETRIC", "int4", 32),
    "w8pc-asym-coreml": ("LINEAR", "int8", None),
}


def np_float(dt):
    return {"f32": np.float32, "f16": np.float16}[dt]


def coreml_quantize(base: str, x: np.ndarray, dt: str) -> dict:
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import (
        constexpr_blockwise_shift_scale)
    from coremltools.optimize import _utils as ou
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights

    mode, dname, G = COREML_SCHEMES[base]
    w = x.astype(np_float(dt))
    rows, cols = x.shape
    # what linear_quantize_weights.transform_op calls, with infer_block_sizes' result for a
    # linear weight [Cout, Cin]: per_channel -> [1, 0], per_block(G) -> [1, G]
    block_sizes = [1, G if G else 0]
    with np.errstate(all="ignore"):
        p = linear_quantize_weights.blockwise_compress_by_dtype(
            w, getattr(types, dname), mode, block_sizes)
        deq = constexpr_blockwise_shift_scale.decompress(p.data, p.scale, p.offset)
        deq2 = linear_quantize_weights.decompress(p)
    assert deq.dtype == w.dtype and p.scale.dtype == w.dtype
    assert np.array_equal(np.asarray(deq2, w.dtype).view(np.uint16 if dt == "f16" else np.uint32),
                          deq.view(np.uint16 if dt == "f16" else np.uint32))
    ng = cols // G if G else 1
    packed = ou.pack_elements_into_bits(p.data.ravel(), int(p.nbits))
    zp = None if p.offset is None else p.offset.astype(np.int64).reshape(rows, ng)
    return dict(q=p.data.astype(np.int64), scales=p.scale.astype(np.float32).reshape(rows, ng),
                zero_points=zp, dequant=deq.astype(np.float32), packed=packed)


def coreml_palettize(x: np.ndarray, dt: str, nbits: int = 4) -> dict:
    from coremltools.converters.mil.mil.ops.defs.iOS18.compression import constexpr_lut_to_dense
    from coremltools.optimize import _utils as ou
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    w = x.astype(np_float(dt))
    with np.errstate(all="ignore"):
        # OpPalettizerConfig(mode="uniform", nbits, granularity="per_tensor") -> block_sizes [0, 0]
        lp = palettize_weights.blockwise_compress(w, "UNIFORM", nbits, [0, 0])
        deq = constexpr_lut_to_dense.decompress(lp.indices, lp.lut, lp.vector_axis)
    assert lp.lut.dtype == w.dtype and deq.dtype == w.dtype
    packed = ou.pack_elements_into_bits(lp.indices.ravel().astype(np.uint8), nbits)
    return dict(q=lp.indices.astype(np.int64), scales=None, zero_points=None,
                dequant=deq.astype(np.float32), packed=packed,
                lut=lp.lut.astype(np.float32).ravel(), lut_shape=[1, 1 << nbits])


def coreml_ties(base: str) -> np.ndarray:
    if base == "w8pc-symclip":
        # a = 127/128 -> scale = 2a/254 = 1/128 exactly: x/scale = k + 0.5
        ks = list(range(-127, 127, 4)) + [-1, 0, 1, 2, 125, 126]
        r0 = tie_fill(half_steps(1 / 128, ks), 64, first=[127 / 128])
        r1 = tie_fill(half_steps(1 / 512, ks[::-1]), 64, first=[-127 / 512])
        return np.stack([r0, r1])
    if base == "w4g32-symclip":
        def grp(s, sign):
            return tie_fill(half_steps(s, range(-7, 7)), 32, first=[sign * 7 * s])
        return np.stack([np.concatenate([grp(1 / 32, 1), grp(1 / 32, -1)]),
                         np.concatenate([grp(1 / 64, -1), grp(1 / 256, 1)])])
    if base == "w8pc-asym-coreml":
        # vmin = lo/256, vmax = (lo+255)/256 -> scale 1/256, zp = rne((-128 vmax - 127 vmin)/range)
        def row(lo):
            ks = [k for k in range(lo, lo + 255) if abs(2 * k + 1) < 2048][::4]
            return tie_fill(half_steps(1 / 256, ks), 64, first=[lo / 256, (lo + 255) / 256])
        return np.stack([row(-37), row(-101)])
    if base == "pal4-pt-uniform":
        # (v - vmin)/(vmax - vmin) * 15 is exactly 7.5 only at the midpoint; add it many times
        r0 = tie_fill([0.0, -0.25, 0.25, 0.03125, -0.03125], 64, first=[-0.5, 0.5])
        r1 = tie_fill([0.0, 0.5, -0.5, 0.0625], 64)
        return np.stack([r0, r1])
    raise ValueError(base)


COREML_VARIANTS = [
    ("w8pc-symclip", "f32"), ("w4g32-symclip", "f32"), ("w8pc-asym-coreml", "f32"),
    ("w8pc-symclip", "f16"), ("w4g32-symclip", "f16"), ("w8pc-asym-coreml", "f16"),
    ("pal4-pt-uniform", "f32"), ("pal4-pt-uniform", "f16"),
]


def gen_coremltools() -> dict:
    vectors = []
    for base, dt in COREML_VARIANTS:
        scheme = scheme_name(base, dt)
        seed = seed_of(scheme)
        if base == "pal4-pt-uniform":
            inputs = [("normal", normal_vector(2, 64, dt, seed))]
            inputs += [(n, x) for n, x, _ in edge_vectors(32, True, dt, seed + 1, True)]
            inputs.append(("zero-tensor", np.zeros((2, 32), np.float32)))
            inputs.append(("const-tensor", round_input(np.full((2, 32), 0.3, np.float32), dt)))
            inputs.append(("ties", exact_in(coreml_ties(base), dt)))
            for kind, x in inputs:
                r = coreml_palettize(x, dt)
                v = make_vector(f"{scheme}/{kind}", scheme, x, r)
                vectors.append(v)
            continue
        G = COREML_SCHEMES[base][2]
        inputs = [("normal", normal_vector(2, 64, dt, seed))]
        inputs += [(n, x) for n, x, _ in edge_vectors(G or 32, G is None, dt, seed + 1, dt != "f32")]
        inputs.append(("ties", exact_in(coreml_ties(base), dt)))
        for kind, x in inputs:
            r = coreml_quantize(base, x, dt)
            vectors.append(make_vector(f"{scheme}/{kind}", scheme, x, r))
    return doc("coremltools", {"coremltools": md.version("coremltools")}, vectors)


# ---------------------------------------------------------------------------------------------
# document assembly
# ---------------------------------------------------------------------------------------------

def make_vector(vid: str, scheme: str, x: np.ndarray, r: dict) -> dict:
    x = np.asarray(x, np.float32)
    rows, cols = x.shape
    q = np.asarray(r["q"]).reshape(rows, cols)
    exp = {"q": intlist(q)}
    if r.get("scales") is not None:
        s = np.asarray(r["scales"], np.float32)
        exp["scales"] = f32list(s)
        exp["scale_shape"] = list(s.shape)
    else:
        exp["scales"] = None
        exp["scale_shape"] = None
    zp = r.get("zero_points")
    if zp is not None:
        zp = np.asarray(zp)
        exp["zero_points"] = intlist(zp) if np.issubdtype(zp.dtype, np.integer) else f32list(zp)
        exp["zero_point_shape"] = list(zp.shape)
    else:
        exp["zero_points"] = None
        exp["zero_point_shape"] = None
    if "lut" in r:
        exp["lut"] = f32list(r["lut"])
        exp["lut_shape"] = r["lut_shape"]
    exp["dequant"] = f32list(np.asarray(r["dequant"]).reshape(rows, cols))
    if r.get("packed") is not None:
        exp["packed_hex"] = hexbytes(r["packed"])
    return {"id": vid, "scheme": scheme,
            "input": {"shape": [rows, cols], "data": f32list(x)}, "expected": exp}


def doc(source: str, extra_versions: dict, vectors: list) -> dict:
    ids = [v["id"] for v in vectors]
    assert len(ids) == len(set(ids)), "duplicate vector ids"
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    versions.update(extra_versions)
    return {"golden_format": 1, "source": source, "versions": versions,
            "generator": GENERATOR, "vectors": vectors}


def dump(d: dict, path: Path) -> None:
    """One vector per line: small diffs, no pretty-printing bloat."""
    head = {k: v for k, v in d.items() if k != "vectors"}
    parts = [json.dumps(head, separators=(",", ":"), allow_nan=False)[:-1] + ',"vectors":[']
    lines = [json.dumps(v, separators=(",", ":"), allow_nan=False) for v in d["vectors"]]
    text = parts[0] + "\n" + ",\n".join(lines) + "\n]}\n"
    json.loads(text)
    path.write_text(text)


GENERATORS = {"ggml": gen_ggml, "ggml-c": gen_ggmlc, "mlx": gen_mlx, "torchao": gen_torchao, "coremltools": gen_coremltools}


# ---------------------------------------------------------------------------------------------
# self-check: re-load the JSON and replay it through each framework
# ---------------------------------------------------------------------------------------------

def bits_equal(a, b) -> bool:
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def check_vector(source: str, v: dict) -> None:
    vid = v["id"]
    rows, cols = v["input"]["shape"]
    n = rows * cols
    e = v["expected"]
    x = np.array(v["input"]["data"], np.float32).reshape(rows, cols)
    assert len(v["input"]["data"]) == n, vid
    assert len(e["q"]) == n and len(e["dequant"]) == n, vid
    for key, shp in (("scales", "scale_shape"), ("zero_points", "zero_point_shape")):
        if e.get(key) is not None:
            assert len(e[key]) == int(np.prod(e[shp])) and e[shp][0] == rows, (vid, key)
        else:
            assert e.get(shp) is None, (vid, shp)
    for key in ("dequant", "scales", "zero_points", "lut"):
        if e.get(key) is not None:
            assert all(math.isfinite(float(t)) for t in e[key]), (vid, key)
    q = np.array(e["q"], np.int64).reshape(rows, cols)
    deq = np.array(e["dequant"], np.float32).reshape(rows, cols)
    scheme = v["scheme"]
    base, _, dt = scheme.partition("@")
    dt = dt or "f32"

    if source == "gguf-py":
        from gguf import quants

        qt = ggml_qtype(scheme)
        packed = np.frombuffer(bytes.fromhex(e["packed_hex"]), np.uint8).reshape(rows, -1)
        assert bits_equal(quants.dequantize(packed, qt), deq), vid
        if v.get("dequant_only"):
            r = ggml_q4k_vector()
            assert np.array_equal(r["packed"], packed), vid
            assert np.array_equal(r["q"], q), vid
            assert bits_equal(r["scales"].ravel(), e["scales"]), vid
            assert bits_equal(r["zero_points"].ravel(), e["zero_points"]), vid
            assert r["raw"] == e["raw"], vid
        else:
            r = ggml_quantize(scheme, x)
            assert np.array_equal(r["packed"], packed), vid
            assert np.array_equal(r["q"], q), vid
            assert bits_equal(r["scales"].ravel(), e["scales"]), vid
            if scheme == "q4_1":
                assert bits_equal(r["zero_points"].ravel(), e["zero_points"]), vid
        # codes and stored scales are consistent with the dequant as gguf defines it
        s = np.array(e["scales"], np.float32).reshape(rows, -1)
        per = cols // s.shape[1]
        if scheme == "q4_K":
            zpv = np.array(e["zero_points"], np.float32).reshape(rows, -1)
            ref = np.repeat(s, per, 1) * q.astype(np.float32) - np.repeat(zpv, per, 1)
        elif scheme == "q4_1":
            zpv = np.array(e["zero_points"], np.float32).reshape(rows, -1)
            ref = np.repeat(s, per, 1) * q.astype(np.float32) + np.repeat(zpv, per, 1)
        else:
            ref = np.repeat(s, per, 1) * q.astype(np.float32)
        assert bits_equal(ref, deq), vid

    elif source == "ggml-c":
        from gguf import quants

        packed = np.frombuffer(bytes.fromhex(e["packed_hex"]), np.uint8).reshape(rows, -1)
        assert bits_equal(ggmlc_dequant(scheme, packed), deq), vid
        gq = "q8_0" if scheme == "a8-q8_0-avx" else scheme
        assert bits_equal(quants.dequantize(packed, ggml_qtype(gq)), deq), vid   # gguf-py agrees
        r = ggmlc_quantize(scheme, x)
        assert np.array_equal(r["packed"], packed), vid
        assert np.array_equal(r["q"], q), vid
        assert bits_equal(np.asarray(r["scales"]).ravel(), e["scales"]), vid
        if r["zero_points"] is not None or e["zero_points"] is not None:
            assert bits_equal(np.asarray(r["zero_points"]).ravel(), e["zero_points"]), vid
        if "raw" in r:
            assert r["raw"] == e["raw"], vid

    elif source == "mlx-cpu":
        import mlx.core as mx

        bits = int(base.split("g")[0][1:])
        G = int(base.split("g")[1].split("-")[0])
        mdt = mlx_dtype(dt)
        wq = mx.array(np.frombuffer(bytes.fromhex(e["packed_hex"]), "<u4").reshape(rows, -1))
        s = mx.array(np.array(e["scales"], np.float32).reshape(e["scale_shape"])).astype(mdt)
        b = mx.array(np.array(e["zero_points"], np.float32).reshape(e["zero_point_shape"])).astype(mdt)
        with mx.stream(mx.cpu):
            d2 = mx.dequantize(wq, s, b, group_size=G, bits=bits)
            qf = mx.dequantize(wq, mx.ones(s.shape), mx.zeros(b.shape), group_size=G, bits=bits)
        assert bits_equal(np.array(d2.astype(mx.float32)), deq), vid
        assert np.array_equal(np.array(qf).astype(np.int64), q), vid
        r = mlx_quantize(x, bits, G, dt)
        assert np.array_equal(r["packed"], np.array(wq)), vid
        assert bits_equal(r["scales"], np.array(e["scales"], np.float32).reshape(e["scale_shape"])), vid

    elif source == "torchao":
        import torch
        from torchao.quantization.quant_primitives import dequantize_affine

        kind, tname, mapping, G = TORCHAO_SCHEMES[base]
        tdt = torch_dtype(dt)
        qmin, qmax = {"int4": (-8, 7), "int8": (-128, 127)}[tname]
        qt = torch.from_numpy(q).to(torch.int8)
        s = torch.from_numpy(np.array(e["scales"], np.float32).reshape(e["scale_shape"])).to(tdt)
        zp = (torch.zeros(s.shape, dtype=torch.int8) if e["zero_points"] is None else
              torch.from_numpy(np.array(e["zero_points"], np.int64).reshape(e["zero_point_shape"])).to(torch.int8))
        block = (1, G if G else cols)
        d2 = dequantize_affine(qt, block, s, zp, torch.int8, qmin, qmax, output_dtype=tdt)
        assert bits_equal(t2np(d2), deq), vid
        r = torchao_quantize(base, x, dt)
        assert np.array_equal(r["q"], q), vid
        assert bits_equal(r["scales"].ravel(), e["scales"]), vid

    elif source == "coremltools":
        from coremltools.converters.mil.mil.ops.defs.iOS18.compression import (
            constexpr_blockwise_shift_scale, constexpr_lut_to_dense)

        npdt = np_float(dt)
        if base == "pal4-pt-uniform":
            lut = np.array(e["lut"], np.float32).astype(npdt).reshape(1, 1, -1, 1)
            d2 = constexpr_lut_to_dense.decompress(q.astype(np.uint8), lut, None)
            r = coreml_palettize(x, dt)
            assert bits_equal(r["lut"], e["lut"]), vid
        else:
            mode, dname, G = COREML_SCHEMES[base]
            qdt = np.uint8 if dname.startswith("u") else np.int8
            s = np.array(e["scales"], np.float32).astype(npdt).reshape(e["scale_shape"])
            off = (None if e["zero_points"] is None else
                   np.array(e["zero_points"], np.int64).astype(qdt).reshape(e["zero_point_shape"]))
            d2 = constexpr_blockwise_shift_scale.decompress(q.astype(qdt), s, off)
            r = coreml_quantize(base, x, dt)
            assert bits_equal(r["scales"].ravel(), e["scales"]), vid
        assert bits_equal(np.asarray(d2, np.float32), deq), vid
        assert np.array_equal(r["q"], q), vid
        assert r["packed"].tobytes().hex() == e["packed_hex"], vid
    else:
        raise ValueError(source)
    # the re-quantization `r` reproduces the stored zero-points too
    rz, ez = r.get("zero_points"), e.get("zero_points")
    assert (rz is None) == (ez is None), vid
    if rz is not None:
        rz = np.asarray(rz)
        if np.issubdtype(rz.dtype, np.integer):
            assert rz.ravel().tolist() == ez, vid
        else:
            assert bits_equal(rz.ravel(), ez), vid


def check_file(path: Path) -> int:
    d = json.loads(path.read_text())
    assert d["golden_format"] == 1 and d["generator"] == GENERATOR
    for v in d["vectors"]:
        check_vector(d["source"], v)
    return len(d["vectors"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "tests" / "golden"))
    ap.add_argument("--only", default=",".join(SOURCES))
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for src in args.only.split(","):
        path = out / f"{src}.json"
        try:
            if not args.check_only:
                d = GENERATORS[src]()
                dump(d, path)
            nvec = check_file(path)
            print(f"{path}: {nvec} vectors, {path.stat().st_size} bytes, self-check OK")
        except Exception as ex:  # report and carry on with the other frameworks
            import traceback

            traceback.print_exc()
            failed.append(f"{src}: {type(ex).__name__}: {ex}")
    for f in failed:
        print("FAILED", f, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
