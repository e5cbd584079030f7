#!/usr/bin/env python3
"""Golden values for qdiff's GGUF reader, produced by gguf-py (llama.cpp's own Python reader and
numpy dequantizers, `gguf.GGUFReader` and `gguf.quants.dequantize`).

Two sections, both written to tests/golden/gguf_smollm2.json (llm/tests/gguf.rs reads it):

* `model`: facts about models/SmolLM2-135M-Instruct.Q4_1.gguf as gguf-py reads them: the file's
  sha256, version, tensor count, every metadata key with its type and value (arrays: length and
  first elements), and for a few tensors of each stored type (Q8_0, Q4_1, F32) the ggml dims, the
  first 64 dequantized values as f32 bit patterns, the exact sum (math.fsum) and the sha256 of
  all the dequantized values as little-endian f32 bytes.
* `blocks`: small tensors of every other type qdiff reads (Q4_0, Q8_0, Q4_1 from gguf-py's own
  quantizers; Q4_K, Q6_K from seeded random block bytes with finite fp16 scales; F16, BF16), as
  raw hex bytes with gguf-py's dequantization of them (first 64 bit patterns, sha256). The Rust
  test writes those bytes into a GGUF with qdiff's writer and checks its reader returns the same
  bits.

Nothing here re-implements a dequantization formula: every value comes from gguf-py.

Usage (the venv needs `gguf` and `numpy`; the versions used are recorded in the output):
    python scripts/golden/gguf_dequant.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
                                          [--out tests/golden/gguf_smollm2.json]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize, quantize

REPO = Path(__file__).resolve().parents[2]
GENERATOR = "scripts/golden/gguf_dequant.py"
MODEL_TENSORS = [
    "token_embd.weight",  # Q8_0
    "blk.0.attn_q.weight",  # Q4_1
    "blk.0.attn_norm.weight",  # F32
    "blk.0.ffn_down.weight",  # Q4_1, rows 576 x cols 1536
    "blk.29.attn_v.weight",  # Q4_1, the last layer
    "output_norm.weight",  # F32
]
N_FIRST = 64


def f32_facts(values: np.ndarray) -> dict:
    v = np.ascontiguousarray(values, dtype=np.float32).ravel()
    assert v.dtype == np.float32
    return {
        "first_bits": [int(b) for b in v[:N_FIRST].view(np.uint32)],
        "sum": math.fsum(float(x) for x in v),
        "sha256": hashlib.sha256(v.astype("<f4").tobytes()).hexdigest(),
    }


def meta_value(field) -> dict:
    """A metadata field as {type, value} (arrays: {type, elem_type, len, first})."""
    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        n = len(field.data)
        first = field.contents(slice(0, min(n, 5)))
        return {
            "type": main.name,
            "elem_type": field.types[-1].name,
            "len": n,
            "first": [x if isinstance(x, str) else x.item() if hasattr(x, "item") else x for x in first],
        }
    v = field.contents()
    if hasattr(v, "item"):
        v = v.item()
    if main == GGUFValueType.BOOL:
        v = bool(v)
    return {"type": main.name, "value": v}


def model_section(path: Path) -> dict:
    r = GGUFReader(path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        meta[name] = meta_value(field)
    by_name = {t.name: t for t in r.tensors}
    tensors = []
    for name in MODEL_TENSORS:
        t = by_name[name]
        values = dequantize(t.data, t.tensor_type)
        dims = [int(d) for d in t.shape]  # ggml order, ne0 first
        rows = int(np.prod(dims[1:])) if len(dims) > 1 else 1
        assert values.size == rows * dims[0]
        tensors.append({"name": name, "type": t.tensor_type.name, "dims": dims, **f32_facts(values)})
    counts: dict[str, int] = {}
    for t in r.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return {
        "file": path.name,
        "sha256": sha,
        "size": path.stat().st_size,
        "version": int(r.fields["GGUF.version"].contents()),
        "tensor_count": len(r.tensors),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "type_counts": counts,
        "metadata": meta,
        "tensors": tensors,
    }


def finite_f16_bits(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """n random fp16 values with |x| in [lo, hi] and random sign, as uint8 pairs."""
    mag = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return (mag * sign).astype(np.float16).view(np.uint8)


def blocks_section() -> list:
    rng = np.random.default_rng(20240617)
    out = []

    def add(name: str, qtype: GGMLQuantizationType, rows: int, cols: int, raw: np.ndarray) -> None:
        raw = np.ascontiguousarray(raw, dtype=np.uint8).ravel()
        values = dequantize(raw.reshape(rows, -1), qtype)
        assert values.shape == (rows, cols), (name, values.shape)
        out.append(
            {"name": name, "type": qtype.name, "dims": [cols, rows], "hex": raw.tobytes().hex(), **f32_facts(values)}
        )

    # gguf-py's own quantizers.
    for qtype, name in [
        (GGMLQuantizationType.Q4_0, "q4_0"),
        (GGMLQuantizationType.Q4_1, "q4_1"),
        (GGMLQuantizationType.Q8_0, "q8_0"),
    ]:
        x = rng.standard_normal((3, 64)).astype(np.float32) * np.float32(0.05)
        add(name, qtype, 3, 64, quantize(x, qtype))

    # K-quants from random bytes with finite scales (gguf-py has no Q4_K / Q6_K quantizer).
    nb = 2
    q4k = rng.integers(0, 256, size=(nb, 144), dtype=np.uint8)
    q4k[:, 0:2] = finite_f16_bits(rng, nb, 1e-4, 1e-1).reshape(nb, 2)
    q4k[:, 2:4] = finite_f16_bits(rng, nb, 1e-4, 1e-1).reshape(nb, 2)
    add("q4_k", GGMLQuantizationType.Q4_K, 1, 256 * nb, q4k)

    q6k = rng.integers(0, 256, size=(nb, 210), dtype=np.uint8)
    q6k[:, 208:210] = finite_f16_bits(rng, nb, 1e-5, 1e-2).reshape(nb, 2)
    add("q6_k", GGMLQuantizationType.Q6_K, 2, 256, q6k)

    f16 = finite_f16_bits(rng, 2 * 48, 1e-7, 6e4)  # includes fp16 subnormals
    add("f16", GGMLQuantizationType.F16, 2, 48, f16)

    x = (rng.standard_normal(3 * 40) * np.exp(rng.uniform(-20, 20, 3 * 40))).astype(np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)  # truncation: any bf16 bits will do
    add("bf16", GGMLQuantizationType.BF16, 3, 40, bf16)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "golden" / "gguf_smollm2.json")
    args = ap.parse_args()
    if not args.model.is_file():
        print(f"{args.model} is absent; fetch it with scripts/fetch-smollm2.sh", file=sys.stderr)
        return 1
    doc = {
        "golden_format": 1,
        "source": "gguf-py",
        "generator": GENERATOR,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "gguf": md.version("gguf"),
        },
        "model": model_section(args.model),
        "blocks": blocks_section(),
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
