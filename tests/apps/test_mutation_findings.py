"""`kizuna embed`, `kizuna zeroshot`, the zero-shot classifier and the batched encoders, checked against embeddings
computed here one text or image at a time (a mutation hunt found each of these unchecked: a wrong slice, offset or
default changed the rows written or the probabilities printed, and every test still passed)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import kizuna
from kizuna.apps.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def mu():
    """ViT-mu-8 as the commands build it: a preset's random weights drawn from seed 0 (do not modify it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = kizuna.create_model("ViT-mu-8").eval()
    return model, kizuna.get_tokenizer(model)


def _png(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


@torch.no_grad()
def _text_ref(model, tok, text: str) -> torch.Tensor:
    """One text alone, normalised here."""
    return F.normalize(model.encode_text(tok([text]), normalize=False).float(), dim=-1)[0]


@torch.no_grad()
def _image_ref(model, path) -> torch.Tensor:
    from kizuna.data.images import load_image

    x = kizuna.get_preprocess(model)(load_image(path))[None]
    return F.normalize(model.encode_image(x, normalize=False).float(), dim=-1)[0]


# ----------------------------------------------------------------------------- the zero-shot classifier
def test_two_labels_the_tokenizer_reads_alike_are_one_group_under_every_template(mu):
    """same_prompts: a group of exactly two was dropped (len(group) > 2), and prompts filled template-major were
    cut into rows that mixed two classes, so "Cat" and "cat" were never found."""
    from kizuna.eval.zeroshot import same_prompts

    _, tok = mu
    templates = ["a photo of a {c}.", "art of the {c}"]
    assert same_prompts(tok, ["Cat", "dog", "cat"], templates) == [[0, 2]]
    assert same_prompts(tok, ["a  car", "A car", "bird", "a car"], ["{c}"]) == [[0, 1, 3]]
    assert same_prompts(tok, ["cat", "dog", "car"], templates) == []


def test_zeroshot_refuses_labels_the_tokenizer_reads_alike(tmp_path, capsys):
    """`kizuna zeroshot --labels Cat,cat` split one probability in half without a word (check_label_prompts)."""
    _png(tmp_path / "a.png", 0)
    rc = main(["zeroshot", "--model", "ViT-mu-8", "--image", str(tmp_path / "a.png"), "--labels", "Cat,dog,cat",
               "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "'Cat' = 'cat'" in err and "alike" in err, err


def test_the_classifier_refuses_nan_image_features_when_asked(mu):
    """ZeroShotClassifier(refuse_non_finite=True) let NaN image features through to the scores."""
    from kizuna.eval.encode import NonFiniteFeatures
    from kizuna.eval.zeroshot import ZeroShotClassifier

    model, tok = mu
    clf = ZeroShotClassifier(model, tok, ["cat", "dog"], refuse_non_finite=True)
    images = torch.full((2, 3, 32, 32), float("nan"))
    with pytest.raises(NonFiniteFeatures, match="images"):
        clf.logits(images)
    assert torch.isnan(ZeroShotClassifier(model, tok, ["cat", "dog"]).logits(images)).all()  # off: passed through


# ----------------------------------------------------------------------------- kizuna zeroshot
def _tables(out: str) -> dict[str, dict[str, float]]:
    """{image path: {label: probability %}} from the printed tables."""
    tables, current = {}, None
    for line in out.splitlines():
        if not line.strip() or line.startswith("label") or line.startswith("-"):
            continue
        m = re.fullmatch(r"(\S+)\s+([0-9.]+)%", line.strip())
        if m and current is not None:
            tables[current][m.group(1)] = float(m.group(2))
        else:
            current = line.strip()
            tables[current] = {}
    return tables


@torch.no_grad()
def _reference_probs(model, tok, path, labels, template="a photo of a {c}.") -> dict[str, float]:
    weights = torch.stack([_text_ref(model, tok, template.replace("{c}", c)) for c in labels])
    logits = model.scale().float() * _image_ref(model, path) @ weights.T + model.bias()
    return dict(zip(labels, (logits.softmax(-1) * 100).tolist()))


def test_zeroshot_prints_every_images_probabilities_under_the_default_template(tmp_path, capsys, mu):
    """33 images (one more than a batch): the batch slice dropped an image per batch, and the default template
    ("a photo of a {c}.") changed the probabilities printed; --top N prints N rows (it was fixed at 5)."""
    model, tok = mu
    paths = [tmp_path / f"im{i:02d}.png" for i in range(33)]
    for i, p in enumerate(paths):
        _png(p, i)
    labels = ["cat", "dog", "car", "tree", "boat", "bird"]
    assert main(["zeroshot", "--model", "ViT-mu-8", "--image", *map(str, paths), "--labels", ",".join(labels),
                 "--top", "6", "--threads", "1"]) == 0
    tables = _tables(capsys.readouterr().out)
    assert list(tables) == [str(p) for p in paths]
    for p in (paths[0], paths[31], paths[32]):
        expected = _reference_probs(model, tok, p, labels)
        assert tables[str(p)] == pytest.approx(expected, abs=0.006), str(p)
    capsys.readouterr()
    assert main(["zeroshot", "--model", "ViT-mu-8", "--image", str(paths[0]), "--labels", ",".join(labels),
                 "--top", "2", "--threads", "1"]) == 0
    ((_, top2),) = _tables(capsys.readouterr().out).items()
    expected = _reference_probs(model, tok, paths[0], labels)
    assert list(top2) == sorted(expected, key=expected.get, reverse=True)[:2]


def test_zeroshot_refuses_a_model_giving_nan_features(tmp_path, capsys, monkeypatch):
    """A diverged model's NaN image features were printed as "nan%" (the command asks for refuse_non_finite)."""
    from kizuna.apps import zeroshot

    def nan_model(args):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = kizuna.create_model("ViT-mu-8").eval()
        with torch.no_grad():
            for p in model.visual.parameters():
                p.fill_(float("nan"))
        return model

    monkeypatch.setattr(zeroshot, "load_model_from_args", nan_model)
    _png(tmp_path / "a.png", 0)
    rc = main(["zeroshot", "--model", "ViT-mu-8", "--image", str(tmp_path / "a.png"), "--labels", "cat,dog"])
    out, err = capsys.readouterr()
    assert rc != 0 and "nan%" not in out and "NaN or inf" in err, (out, err)


def test_labels_are_stripped_and_a_label_given_twice_is_refused():
    """--labels "cat, dog" gave the label " dog" (its prompt "a photo of a  dog."), and a label given exactly twice
    (Counter n > 2) split one probability between two rows."""
    from kizuna.apps.zeroshot import parse_labels

    assert parse_labels(" cat ,dog,  red car ,") == ["cat", "dog", "red car"]
    with pytest.raises(ValueError, match="repeated label.*'cat'"):
        parse_labels("cat,dog,cat")


# ----------------------------------------------------------------------------- batched encoders
def test_encode_texts_sharded_puts_every_batchs_rows_in_place_and_names_the_rejected_text(mu):
    """7 texts in batches of 3, text 4 rejected by the tokenizer: a later batch's rows were written over the first
    batch's, a partial last batch was dropped (a floored batch count) or padded past the texts."""
    from kizuna.eval.encode import encode_texts_sharded

    model, tok = mu
    texts = ["a cat", "a dog", "a red car", "a tree", "&nbsp;", "a small boat", "two birds"]
    res = encode_texts_sharded(model, tok, texts, batch_size=3)
    assert res.features.shape == (7, 32) and res.valid.tolist() == [True] * 4 + [False] + [True] * 2
    for k, t in enumerate(texts):
        if k != 4:
            torch.testing.assert_close(res.features[k], _text_ref(model, tok, t), atol=1e-5, rtol=1e-5)
    assert res.skips.counts == {"bad_caption": 1} and "text 4 " in " ".join(res.skips.examples["bad_caption"])


def test_encode_texts_sharded_refuses_nan_features(mu):
    """NaN text features were returned to retrieval (a NaN similarity ranked first) where image features are refused."""
    from kizuna.eval.encode import NonFiniteFeatures, encode_texts_sharded

    model, tok = mu
    with pytest.raises(NonFiniteFeatures, match="texts"):
        encode_texts_sharded(model, tok, ["a cat", "a dog"], encode_fn=lambda t: torch.full((len(t), 4), float("nan")))


def test_encode_images_rows_follow_the_subset_with_a_repeated_row(tmp_path, mu):
    """A subset naming one image twice within a batch of 3: each row is its own image's normalised embedding (a dropped
    offset wrote every batch into the first rows; the repeated image's second copy lost its slot)."""
    from kizuna.eval.datasets import load_dataset
    from kizuna.eval.encode import encode_images

    model, _ = mu
    for c in ("ant", "bee"):
        for i in range(3):
            _png(tmp_path / "ds" / c / f"{i}.png", 10 * len(c) + i + (c == "bee") * 50)
    ds = load_dataset(tmp_path / "ds")
    order = [4, 0, 0, 5, 2]
    sub = ds.subset(order)
    res = encode_images(model, sub, batch_size=3, progress=False)
    assert res.valid.all() and res.features.shape == (5, 32)
    for row, k in enumerate(order):
        (path,) = (tmp_path / "ds").glob(ds.keys[k] + ".*")
        torch.testing.assert_close(res.features[row], _image_ref(model, path), atol=1e-5, rtol=1e-5)
    assert torch.linalg.vector_norm(res.features, dim=1) == pytest.approx(torch.ones(5), abs=1e-5)


# ----------------------------------------------------------------------------- kizuna embed
def test_embed_texts_rows_are_the_files_texts_in_order_without_the_empty_ones(tmp_path, mu):
    """5 texts in batches of 2 (a short slice dropped a text per batch, the rows no longer matching the names), and
    a line with no text left once cleaned is left out rather than stopping the job."""
    from kizuna.apps.embed import embed_texts

    model, tok = mu
    (tmp_path / "t.txt").write_text("a cat\n\na dog\n&nbsp;\na red car\nthe tree\nboats\n", encoding="utf-8")
    texts, emb = embed_texts(model, tmp_path / "t.txt", batch_size=2, progress=False)
    assert texts == ["a cat", "a dog", "a red car", "the tree", "boats"]
    assert emb.shape == (5, 32) and emb.dtype == np.float32
    ref = torch.stack([_text_ref(model, tok, t) for t in texts]).numpy()
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_embed_texts_notes_only_the_texts_cut_at_the_context_length(tmp_path, mu, capsys):
    """CLIP's BPE adds a start and an end token: 75 words of one token each fill the 77 tokens exactly, 76 are cut.
    Counting one added token (SigLIP's) missed the text cut by one token."""
    from kizuna.apps.embed import embed_texts

    model, tok = mu
    assert tok.context_length == 77
    (tmp_path / "fits.txt").write_text("cat " * 75 + "\na dog\n", encoding="utf-8")
    embed_texts(model, tmp_path / "fits.txt", progress=False)
    assert "longer than" not in capsys.readouterr().err
    (tmp_path / "cut.txt").write_text("cat " * 76 + "\na dog\n", encoding="utf-8")
    embed_texts(model, tmp_path / "cut.txt", progress=False)
    assert "note: 1 of 2 texts are longer than the model's 77 tokens" in capsys.readouterr().err


def test_embed_images_names_each_row_after_its_own_image_past_a_corrupt_one(tmp_path, mu):
    """A corrupt image in the first batch: the row names counted it, so every later row carried the name of the
    image before it; the rows are unit length (normalize=True)."""
    from kizuna.apps.embed import embed_images

    model, _ = mu
    folder = tmp_path / "imgs"
    for i, name in enumerate(["a.png", "c.png", "d.png", "e.png"]):
        _png(folder / name, i)
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    names, emb, errors = embed_images(model, folder, batch_size=2, workers=0, progress=False)
    assert [n.rsplit("/", 1)[-1] for n in names] == ["a.png", "c.png", "d.png", "e.png"] and len(errors) == 1
    for name, row in zip(names, emb):
        np.testing.assert_allclose(row, _image_ref(model, name).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_the_row_list_has_one_line_per_row_and_the_npy_is_float32(tmp_path):
    """A name holding a line break took two lines of the .txt (row N no longer line N); float64 input was written
    as float64, though the .npy is float32."""
    from kizuna.apps.embed import write_embeddings

    out = tmp_path / "e.npy"
    emb = np.arange(12, dtype=np.float64).reshape(3, 4)
    write_embeddings(out, ["one\ntwo", "three\u2028four", "five"], emb, "text")
    # (the breaks as escapes: a space in their place named other inputs alike, test_embed_findings_s50)
    assert (tmp_path / "e.txt").read_bytes().decode("utf-8") == "one\\ntwo\nthree\\u2028four\nfive\n"
    back = np.load(out)
    assert back.dtype == np.float32 and np.array_equal(back, emb.astype(np.float32))


def test_a_parquet_of_texts_has_a_text_column(tmp_path):
    """The .parquet of `embed --texts` names its column "text", of `--images` "path" (not "path" for both)."""
    pq = pytest.importorskip("pyarrow.parquet")
    from kizuna.apps.embed import write_embeddings

    emb = np.eye(2, 3, dtype=np.float32)
    write_embeddings(tmp_path / "t.parquet", ["a cat", "a dog"], emb, "text")
    table = pq.read_table(tmp_path / "t.parquet").to_pydict()
    assert table["text"] == ["a cat", "a dog"] and np.allclose(np.array(table["embedding"]), emb)
    write_embeddings(tmp_path / "p.parquet", ["x/a.png"], emb[:1], "path")
    assert pq.read_table(tmp_path / "p.parquet").column_names == ["path", "embedding"]


def test_embed_refuses_an_out_whose_row_list_is_the_input_or_a_folder(tmp_path, capsys, monkeypatch):
    """--texts caps.txt --out caps.npy wrote its row list over the input; --out a folder was found only after the
    work. Both are refused before the model loads."""
    from kizuna.apps import embed

    def no_model(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(embed, "load_model_from_args", no_model)
    caps = tmp_path / "caps.txt"
    caps.write_bytes(b"a cat\r\n\r\na dog\r\n")
    assert main(["embed", "--model", "ViT-mu-8", "--texts", str(caps), "--out", str(tmp_path / "caps.npy")]) == 2
    assert "which is the input --texts" in capsys.readouterr().err
    assert caps.read_bytes() == b"a cat\r\n\r\na dog\r\n"
    (tmp_path / "d.npy").mkdir()
    assert main(["embed", "--model", "ViT-mu-8", "--texts", str(caps), "--out", str(tmp_path / "d.npy")]) == 2
    assert f"--out {tmp_path / 'd.npy'} is a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- apps/common.py
def test_json_safe_turns_inf_and_numpy_numbers_into_json():
    """results.json: inf stayed inf (invalid strict JSON), a numpy integer stayed one (json.dumps refused it)."""
    import json

    from kizuna.apps.common import json_safe

    safe = json_safe({1: [float("inf"), -np.inf, np.float32(0.5)], "n": np.int64(3), "t": torch.tensor([1.5])})
    assert json.loads(json.dumps(safe, allow_nan=False)) == {"1": [None, None, 0.5], "n": 3, "t": [1.5]}


def test_check_writable_for_a_folder_looks_at_the_folder_itself(tmp_path, monkeypatch):
    """check_writable(out, folder_for=...) checked out's parent: a read-only --out folder inside a writable one passed,
    and the command failed once its work was done. (Read-only is simulated: the tests may run as root.)"""
    import os

    from kizuna.apps.common import check_writable

    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder for results"):
        check_writable(tmp_path / "f", folder_for="results")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if os.fspath(path) == os.fspath(read_only)
                        else real(path, mode, **kw))
    with pytest.raises(PermissionError, match=f"cannot write in {read_only}"):
        check_writable(read_only, folder_for="results")
    with pytest.raises(PermissionError, match=f"cannot write in {read_only}"):
        check_writable(read_only / "new" / "deeper", folder_for="results")
    check_writable(tmp_path / "new" / "deeper", folder_for="results")
    check_writable(read_only.with_name("f2.npy"))

