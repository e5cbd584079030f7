#!/usr/bin/env python3
"""Golden tokenizations of SmolLM2-135M-Instruct (its GGUF-embedded tokenizer), from llama.cpp.

Runs llama.cpp's own `llama-tokenize` on every text below (the text is written to a file and
read with `-f`, so nothing is escaped or re-quoted; `--no-escape`, `--no-bos`; special tokens
parsed unless the case says `"special": false`, then `--no-parse-special`) and writes
tests/golden/tokenize_smollm2.json:

    {"model": "models/SmolLM2-135M-Instruct.Q4_1.gguf", "model_sha256": "...",
     "reference": "llama.cpp <commit> llama-tokenize", "generator": "scripts/golden/tokenize_smollm2.py",
     "cases": [{"text": "...", "special": true, "ids": [...]}, ...]}

Without a llama.cpp build (`--reference transformers`, or `auto` when no binary is found) the ids
come from Hugging Face transformers instead (`AutoTokenizer.from_pretrained(dir, gguf_file=NAME)`,
which converts the GGUF vocabulary); the "reference" field then says so. `--cross-check` also
runs transformers on every case and reports where the two disagree (it changes nothing written).

transformers' GGUF reader needs torch; the committed file was made with llama.cpp b11312
(commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f, built from the copy vendored in
llama-cpp-python 0.3.36, no .git, hence --llama-commit) and cross-checked against transformers
5.24.0, which differs from llama.cpp on one case (superscript digits, letter numbers and
circled digits: the \\p{N} split):

    PYTHONPATH=/tmp/venv/lib/python3.11/site-packages /work/venv-golden/bin/python \\
        scripts/golden/tokenize_smollm2.py --llama-commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f --cross-check

Usage:
    python scripts/golden/tokenize_smollm2.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
        [--llama-tokenize /tmp/llamacpp/build/bin/llama-tokenize] [--llama-commit SHA]
        [--reference auto|llama.cpp|transformers] [--cross-check] [--out tests/golden/tokenize_smollm2.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATOR = "scripts/golden/tokenize_smollm2.py"

CHAT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2? Answer in one word.<|im_end|>\n<|im_start|>assistant\n"
)
SHORT_CHAT = "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"

# (text, special): prose, numbers, code, whitespace, punctuation, contractions, non-ASCII, empty,
# chat prompts with and without special-token parsing.
CASES: list[tuple[str, bool]] = [
    ("The quick brown fox jumps over the lazy dog.", True),
    ("Hello, world! How are you doing today? I hope everything is fine.", True),
    ("In 2024, the population was 8,123,456,789 people (approx. 3.14% growth).", True),
    ("1234567890 0.000001 -42 +7 1e-5 0xFF 2^10=1024", True),
    ("Version 3.11.7 costs $19.99; call 555-0123 before 10:30pm.", True),
    ("def add(a, b):\n    return a + b\n\n\nfor i in range(10):\n\tprint(i)\n", True),
    ('fn main() {\n    let x: Vec<u32> = vec![1, 2, 3];\n    println!("{:?}", x);\n}\n', True),
    ("   leading spaces, and trailing   ", True),
    ("line one\n\nline three\n\n\n\nfinal\r\nwindows line\r\n", True),
    ("a  b   c    d\t\te \t \n f", True),
    ("Wait... what?! (yes) [no] {maybe} <tag> @user #hash ~tilde ^caret |pipe \\back `tick`", True),
    ("It's, they're, we've, I'm, you'll, he'd, DON'T, She'S, o'clock 'quoted'", True),
    ("Café déjà vu, naïve résumé, Ærøskøbing, straße, ñandú.", True),
    ("日本語のテキストと中文字符。한국어도 있습니다.", True),
    ("Emoji: 😀🎉👍🏽 and a flag 🇫🇷 and a family 👨‍👩‍👧", True),
    ("Привет, мир! Γειά σου κόσμε. مرحبا بالعالم", True),
    ("∑_{i=1}^{n} x² ≈ π·r² → ∞ ± 0.5 °C", True),
    ("no\u00a0break\u2009thin\u3000ideographic spaces", True),
    ('https://example.com/path?q=1&r=two#frag {"key": [1, 2.5e-3, null]}', True),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!???? ------", True),
    # Unicode categories the regexes care about: combining marks, other-script digits (\p{N}),
    # letter numbers, separators, format characters.
    ("e\u0301 vs \u00e9, \u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", True),
    ("\u0663\u0664 \u00b2\u00b3 \u2162\u216b \u2460 \uff11\uff12", True),
    ("para\u2028line\u2029sep\u0085nel \u200bzw\ufeffbom \x0b\x0cfeeds", True),
    ("  !!  ??\t\tx '' 's 'S ''s", True),
    ("", True),
    (" ", True),
    ("\n", True),
    (CHAT, True),
    (CHAT, False),
    (SHORT_CHAT, True),
    (SHORT_CHAT, False),
    ("<|endoftext|>text after<|endoftext|>", True),
    ("<|endoftext|>text after<|endoftext|>", False),
    ("x<|im_end|>y <|im_start|> z<|im_start|", True),
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def llama_commit(binary: Path) -> str:
    """The llama.cpp commit of the binary: `git rev-parse HEAD` in the llama.cpp checkout above it
    (a folder with include/llama.h), else what `--version` says (`commit 0c1e57098`)."""
    for root in binary.parents:
        if not (root / "include" / "llama.h").is_file():
            continue
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        except OSError:
            break
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
        break
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
        m = re.search(r"commit ([0-9a-f]{7,40})", out.stdout + out.stderr)
        if m:
            return m.group(1)
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown-commit"


def tokenize_llama(binary: Path, model: Path, text: str, special: bool) -> list[int]:
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        prompt_file = f.name
    try:
        cmd = [str(binary), "-m", str(model), "-f", prompt_file, "--ids", "--no-bos", "--no-escape", "--log-disable"]
        if not special:
            cmd.append("--no-parse-special")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(prompt_file)
    if out.returncode != 0:
        raise RuntimeError(f"llama-tokenize failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("[")]
    if len(lines) != 1:
        raise RuntimeError(f"llama-tokenize: unexpected output: {out.stdout!r}")
    return [int(v) for v in json.loads(lines[-1])]


class TransformersReference:
    def __init__(self, model: Path):
        import transformers
        from transformers import AutoTokenizer

        self.version = transformers.__version__
        self.tok = AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name)

    def tokenize(self, text: str, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--llama-tokenize", type=Path, default=Path("/tmp/llamacpp/build/bin/llama-tokenize"))
    ap.add_argument("--llama-commit", help="the llama.cpp commit, when the build is not a git checkout")
    ap.add_argument("--reference", choices=["auto", "llama.cpp", "transformers"], default="auto")
    ap.add_argument("--cross-check", action="store_true", help="also compare with transformers")
    ap.add_argument("--out", type=Path, default=REPO / "tests/golden/tokenize_smollm2.json")
    args = ap.parse_args()

    if not args.model.is_file():
        print(f"{args.model}: absent; fetch it with scripts/fetch-smollm2.sh", file=sys.stderr)
        return 2
    reference = args.reference
    if reference == "auto":
        reference = "llama.cpp" if args.llama_tokenize.is_file() else "transformers"

    if reference == "llama.cpp":
        commit = args.llama_commit or llama_commit(args.llama_tokenize)
        ref_name = f"llama.cpp {commit} llama-tokenize"
        tokenize = lambda text, special: tokenize_llama(args.llama_tokenize, args.model, text, special)  # noqa: E731
    else:
        tr = TransformersReference(args.model)
        ref_name = f"transformers {tr.version} AutoTokenizer(gguf_file)"
        tokenize = tr.tokenize

    cases = [{"text": text, "special": special, "ids": tokenize(text, special)} for text, special in CASES]

    if args.cross_check:
        tr = TransformersReference(args.model)
        bad = 0
        for c in cases:
            other = tr.tokenize(c["text"], c["special"])
            if other != c["ids"]:
                bad += 1
                print(f"differs from transformers {tr.version}: {c['text']!r} special={c['special']}\n"
                      f"  {reference}: {c['ids']}\n  transformers: {other}", file=sys.stderr)
        print(f"cross-check: {len(cases) - bad}/{len(cases)} cases agree with transformers {tr.version}",
              file=sys.stderr)

    doc = {
        "model": str(args.model.resolve().relative_to(REPO)) if args.model.resolve().is_relative_to(REPO)
        else args.model.name,
        "model_sha256": sha256(args.model),
        "reference": ref_name,
        "generator": GENERATOR,
        "options": "no BOS; special tokens parsed when \"special\" is true (llama-tokenize --no-parse-special otherwise)",
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One case per line: readable diffs when the reference changes.
    head = {k: v for k, v in doc.items() if k != "cases"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    lines.append(' "cases": [')
    lines += [f"  {json.dumps(c, ensure_ascii=False)}," for c in cases]
    lines[-1] = lines[-1].rstrip(",")
    lines += [" ]", "}"]
    text = "\n".join(lines) + "\n"
    if json.loads(text) != doc:
        raise AssertionError("the written JSON does not read back")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out} ({len(cases)} cases, reference: {ref_name})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
