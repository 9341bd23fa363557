"""kizuna under a non-UTF-8 locale: `LC_ALL=C PYTHONUTF8=0` (plain LC_ALL=C turns on Python's UTF-8 mode), where
Python's stdout is ASCII, files opened without an encoding are ASCII, and argv's non-ASCII bytes arrive as lone
surrogates. Each command runs in a subprocess under that locale."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


RUN = "import sys; from kizuna.apps.cli import main; sys.exit(main())"


def _ascii_locale() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANGUAGE") and not k.startswith("LC_")}
    env.update(LC_ALL="C", LANG="C", PYTHONUTF8="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _kizuna(*args, cwd) -> subprocess.CompletedProcess:
    # str arguments reach the child as their UTF-8 bytes, as typed in a UTF-8 terminal
    return subprocess.run([sys.executable, "-c", RUN, *map(str, args)], cwd=cwd, env=_ascii_locale(),
                          capture_output=True, timeout=300)


def _ok(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    return proc.stdout.decode("utf-8", "replace")


def _png(path: Path, colour) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)


def test_help_under_an_ascii_locale(tmp_path):
    """`kizuna --help` and bare `kizuna` crashed with a UnicodeEncodeError traceback on the kanji of the
    description."""
    out = _ok(_kizuna("--help", cwd=tmp_path))
    assert "kizuna (\\u7d46)" in out and "COMMAND" in out
    bare = _kizuna(cwd=tmp_path)
    assert bare.returncode == 2 and b"Traceback" not in bare.stderr and b"COMMAND" in bare.stderr  # help on stderr
    # stdout closed (`>&-`): the help goes to os.devnull, which failed on the kanji too
    closed = subprocess.run(["sh", "-c", '"$0" "$@" >&-', sys.executable, "-c", RUN, "--help"], cwd=tmp_path,
                            env=_ascii_locale(), stderr=subprocess.PIPE, timeout=300)
    assert closed.returncode == 0 and b"Traceback" not in closed.stderr, closed.stderr[-2000:]


def test_embed_texts_with_non_ascii_lines(tmp_path):
    """os.fsencode() of the texts ('ascii' codec can't encode '\\xe9') failed the whole job; nothing written."""
    texts = ["café au lait", "日本の猫 🐱", "a plain line"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    _ok(_kizuna("embed", "--model", "ViT-mu-8", "--texts", "texts.txt", "--out", "emb.npy", "--threads", "1",
                "--no-progress", cwd=tmp_path))
    assert (tmp_path / "emb.txt").read_text(encoding="utf-8").splitlines() == texts
    import numpy as np

    assert np.load(tmp_path / "emb.npy").shape[0] == 3


def test_a_folder_of_export_hf_clip_loads_back(tmp_path):
    """vocab.json (UTF-8, non-ASCII tokens) was read in the locale's encoding: kizuna's own export could not be
    loaded back ("cannot be read as JSON")."""
    import kizuna
    from kizuna.models.convert_hf import export_hf_clip

    export_hf_clip(kizuna.create_model("ViT-mu-8"), tmp_path / "hf")
    assert not (tmp_path / "hf" / "vocab.json").read_bytes().isascii()
    out = _ok(_kizuna("info", "hf", "--json", cwd=tmp_path))
    assert json.loads(out)


def test_zeroshot_typed_labels_and_templates_equal_the_same_from_files(tmp_path):
    """Typed labels reached the tokenizer as surrogates (other probabilities: 49/43/7% against 39/38/23%), the same
    labels from a file crashed printing the table."""
    _png(tmp_path / "a.png", (200, 30, 30))
    labels, template = ["café", "日本", "dog"], "une photo d'un {c}, très nette"
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (tmp_path / "templates.txt").write_text(template + "\n", encoding="utf-8")
    common = ["zeroshot", "--model", "ViT-mu-8", "--image", "a.png", "--threads", "1"]
    typed = _ok(_kizuna(*common, "--labels", ",".join(labels), "--template", template, cwd=tmp_path))
    read = _ok(_kizuna(*common, "--labels", "labels.txt", "--template", "templates.txt", cwd=tmp_path))
    assert typed == read
    assert "caf\\xe9" in typed and "\\u65e5\\u672c" in typed and typed.count("%") == 3


@pytest.mark.slow  # 10 s (subprocesses under an ASCII locale): `make test-slow`
def test_eval_zeroshot_and_vit_eval_write_results_with_a_non_ascii_class(tmp_path):
    """The tables, printed before the files were written, raised UnicodeEncodeError on a class named "café":
    exit 2 and no results.json. A typed --template was tokenised as surrogates: other class embeddings (another
    cache file) than the same template from a file."""
    import kizuna

    for name, colour in [("café", (220, 40, 40)), ("dog", (40, 40, 220))]:
        for i in range(2):
            _png(tmp_path / "ds" / "test" / name / f"{i}.png", tuple(c + 10 * i for c in colour))
    template = "une photo d'un {c}, très nette"
    (tmp_path / "templates.txt").write_text(template + "\n", encoding="utf-8")
    common = ["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", "ds", "--threads", "1", "--no-progress",
              "--cache-dir", "cache"]
    _ok(_kizuna(*common, "--template", "templates.txt", cwd=tmp_path))
    _ok(_kizuna(*common, "--template", template, "--out", "ev", cwd=tmp_path))
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the same prompts, the same class embeddings
    record = json.loads((tmp_path / "ev" / "results.json").read_text(encoding="utf-8"))[0]
    assert [c["class"] for c in record["details"]["per_class"]] == ["café", "dog"]

    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=2, width=32, mlp_dim=64, depth=2, heads=2)
    kizuna.save_model(vit, tmp_path / "vit")
    _ok(_kizuna("vit", "eval", "vit", "--data", "ds", "--threads", "1", "--no-progress", "--out", "vev",
                cwd=tmp_path))
    assert "café" in (tmp_path / "vev" / "results.md").read_text(encoding="utf-8")
    assert (tmp_path / "vev" / "confusion.png").is_file()


def test_text_argument_decodes_what_an_ascii_locale_made_of_argv():
    from kizuna.apps.cli import text_argument

    typed = "une photo d'un {c}, très".encode("utf-8").decode("ascii", "surrogateescape")  # argv under LC_ALL=C
    assert text_argument(typed) == "une photo d'un {c}, très"
    assert text_argument("plain {c}") == "plain {c}" and text_argument("déjà du texte") == "déjà du texte"


def test_results_text_holds_the_bytes_of_a_name_from_the_file_system(tmp_path):
    """A dataset folder's name under an ASCII locale is lone surrogates: results.md failed on them once
    results.json was written."""
    from kizuna.models.checkpoint import atomic_write_text

    name = os.fsencode("日本データ").decode("ascii", "surrogateescape")  # the folder's name under LC_ALL=C
    atomic_write_text(tmp_path / "r.md", f"# m on {name}, caf\udce9\n")  # and a Latin-1 byte: an escape
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == "# m on 日本データ, caf\\xe9\n"


def test_a_dataset_folder_name_of_undecodable_bytes_is_text(tmp_path):
    """A Latin-1 folder name (or any non-ASCII one under LC_ALL=C) reached Python as lone surrogates, and the
    confusion plot's title (matplotlib) failed on them after the evaluation."""
    from kizuna.eval.datasets import default_dataset_name

    folder = os.path.join(os.fsencode(tmp_path), b"donn\xe9es")
    os.mkdir(folder)
    name = default_dataset_name(os.fsdecode(folder))
    assert name == "données" and name.encode("utf-8")


def test_one_ascii_stream_as_stdout_and_stderr_gets_its_error_handler_back(monkeypatch):
    """A host program's one stream as both: the handlers were put back first in, first out, leaving kizuna's."""
    import io

    from kizuna.apps.cli import main

    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(sys, "stderr", stream)
    assert main(["info", "ViT-mu-8"]) == 0
    assert stream.errors == "strict"
