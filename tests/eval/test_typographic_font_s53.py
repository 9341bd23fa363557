"""The typographic attack writes class names that are not ASCII (session 53): Pillow's default font draws ASCII
only, so every other character was the same missing-glyph box ("猫" and "狗" one image), scored all the same."""
from __future__ import annotations

import numpy as np
import pytest
from _evalhelpers import classification_wds
from PIL import Image

import kizuna
from kizuna.eval.probes import font_for, render_text, typographic_attack

matplotlib = pytest.importorskip("matplotlib")  # (DejaVu Sans comes with it)


def _written(word: str, font=None) -> np.ndarray:
    return np.asarray(render_text(Image.new("RGB", (96, 96), (60, 90, 120)), word, font=font))


def test_ascii_names_keep_pillows_default_font():
    assert font_for(["cat", "dog", "traffic light"]) is None


def test_names_the_default_font_cannot_draw_are_written_in_dejavu_sans():
    font = font_for(["crème brûlée", "кошка", "cat"])
    assert font is not None and font.endswith("DejaVuSans.ttf")
    assert not np.array_equal(_written("кошка", font), _written("собака", font))
    assert np.array_equal(_written("кот"), _written("пёс"))  # (the default font: three boxes each)


def test_names_no_font_here_draws_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"cannot write the class name\(s\) '猫', '犬'.*--no-typographic"):
        font_for(["猫", "犬", "cat"])
    with pytest.raises(ValueError, match="the font .*DejaVuSans.ttf draws"):
        font_for(["猫"], font_for(["кошка"]))  # a font given is the one checked


def test_the_attack_records_the_font_it_wrote_in(tmp_path):
    names = ["кошка", "собака", "птица"]
    ds_root = classification_wds(tmp_path / "cls", n=6, classnames=names)
    from kizuna.eval.datasets import load_dataset

    model = kizuna.create_model("ViT-mu-8")
    result = typographic_attack(model, kizuna.get_tokenizer(model), load_dataset(ds_root), batch_size=6,
                                progress=False)
    assert result.to_dict()["font"] == "DejaVuSans.ttf" and result.n == 6
    with pytest.raises(ValueError, match="cannot write"):
        typographic_attack(model, kizuna.get_tokenizer(model),
                           load_dataset(classification_wds(tmp_path / "cjk", n=4, classnames=["猫", "犬"])),
                           progress=False)


def test_eval_probes_refuses_undrawable_names_before_any_probe_runs(tmp_path, capsys, monkeypatch):
    from kizuna.apps.cli import main
    from kizuna.eval import probes

    ran = []
    robustness = probes.evaluate_robustness
    monkeypatch.setattr(probes, "evaluate_robustness", lambda *a, **k: ran.append(1) or robustness(*a, **k))
    data = classification_wds(tmp_path / "cjk", n=4, classnames=["猫", "犬"])
    code = main(["eval", "probes", "--model", "ViT-mu-8", "--dataset", str(data), "--no-progress", "--out",
                 str(tmp_path / "res"), "--severities", "1", "--corruptions", "gaussian_noise"])
    assert code == 2 and "cannot write the class name(s) '猫', '犬'" in capsys.readouterr().err
    assert ran == []


def test_a_font_without_freetype_still_writes_ascii(monkeypatch):
    from PIL import ImageFont

    from kizuna.eval import probes

    monkeypatch.setattr(probes, "default_font", lambda px: ImageFont.load_default_imagefont())
    assert font_for(["cat", "dog"]) is None  # (drawing U+FFFF failed: UnicodeEncodeError for every dataset)
