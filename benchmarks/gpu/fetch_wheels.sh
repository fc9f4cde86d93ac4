#!/usr/bin/env bash
# Run HERE (a machine with PyPI access) before using a lent GPU: downloads the Python 3.12 x86-64
# wheels that conan_core needs and the lent GPU image lacks (it has torch, transformers,
# sentencepiece, tokenizers, safetensors, numpy, pyyaml, tqdm, sentence-transformers) into .whl/,
# which check.sh installs from. Then call the device tool with carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
for pkg in "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types" "typing-inspection" \
           "webdataset" "braceexpand" "babel" "faiss-gpu" "bm25s"; do
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$pkg"
done
du -sh .whl
