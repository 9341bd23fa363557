#!/usr/bin/env bash
# Packs what a lent GPU machine needs into .device/ (git-ignored; the device tool carries it with
# carry=[".device"]): the Python wheels its image lacks, and the shared data the GPU checks read, cut
# down to fit the tool's 64 MiB limit. Run it here, from the repository root:
#
#   bash benchmarks/device/prepare.sh            # then see benchmarks/device/README.md
#
# Needs network access to PyPI (this project's CPU machines have it) and ../shared (or $KIZUNA_SHARED).
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${KIZUNA_SHARED:-../shared}
DEST=.device
rm -rf "$DEST" && mkdir -p "$DEST/wheels" "$DEST/shared/data/flickr8k/train"

# Pure-Python wheels the GPU image does not have (it has torch, torchvision, timm, transformers,
# tokenizers, safetensors, regex, tqdm, matplotlib, tensorboard, pillow, numpy).
PY=${PYTHON:-.venv/bin/python}
# The device's python3 is CPython 3.12 on x86-64 Linux (the device tool's KINDS.md).
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DEST/wheels" --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    "ftfy==$("$PY" -c 'import ftfy; print(ftfy.__version__)')" \
    "wcwidth==$("$PY" -c 'from importlib.metadata import version; print(version("wcwidth"))')" \
    "open_clip_torch==3.3.0"  # the version that ran on the H200 (2026-12-04); a newer one may want newer deps

# CIFAR-10 as it is in ../shared (tar shards, class names, templates). JPEG bytes do not compress, but the
# 1.5 KB of tar headers per sample do: 86 MiB of shards pack into a much smaller .tar.gz.
# Flickr8k: only the captions (the .txt members), which the GPU training-step benchmark tokenizes so the
# text tower's padding trim sees real caption lengths.
"$PY" - "$SHARED" "$DEST" <<'PYEOF'
import io, sys, tarfile
from pathlib import Path
shared, dest = Path(sys.argv[1]), Path(sys.argv[2])
with tarfile.open(dest / "shared/data/flickr8k/train/000000.tar", "w") as out:
    for shard in sorted((shared / "data/flickr8k").glob("*/*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".txt"):
                    data = tar.extractfile(m).read()
                    info = tarfile.TarInfo(f"{shard.parent.name}-{shard.stem}-{m.name}")
                    info.size = len(data)
                    out.addfile(info, io.BytesIO(data))
PYEOF
tar czf "$DEST/shared.tar.gz" -C "$DEST/shared" data/flickr8k \
    -C "$(cd "$SHARED" && pwd)" data/cifar10/train data/cifar10/test data/cifar10/classnames.txt \
    data/cifar10/zeroshot_classification_templates.txt
rm -rf "$DEST/shared"
du -sh "$DEST"/* && du -sh "$DEST"
