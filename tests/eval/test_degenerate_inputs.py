"""Degenerate inputs the commands took silently: NaN/inf features outside `kizuna eval` (embed, zeroshot, analyze
predict), a preprocess std of 0, unstable ties in predict.json, float and 32-bit grey images, and labels that
the tokenizer reads alike ("Cat" and "cat")."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.apps.cli import main
from kizuna.eval.encode import NonFiniteFeatures

ARGS = ["--threads", "1"]


def _mu(**edit):
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    with torch.no_grad():
        for name, value in edit.items():
            model.get_parameter(name)[0, 0] = value
    return model


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Saved ViT-mu-8 models: one NaN in the image projection, one inf in the text projection, a std of 0."""
    root = tmp_path_factory.mktemp("broken")
    kizuna.save_model(_mu(**{"visual.proj.weight": float("nan")}), root / "nanimg")
    kizuna.save_model(_mu(**{"text.proj.weight": float("inf")}), root / "inftxt")
    model = _mu()
    model.cfg.preprocess = {**model.cfg.preprocess, "std": [0.0, 0.26, 0.27]}
    kizuna.save_model(model, root / "std0")
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(root / "a.png")
    (root / "caps.txt").write_text("a dog\na cat\n")
    return root


# ------------------------------------------------------------------ 1. NaN/inf features, std 0
def test_embed_refuses_nan_image_features_and_writes_nothing(broken, tmp_path, capsys):
    out = tmp_path / "e.npy"
    assert main(["embed", "--model", str(broken / "nanimg"), "--images", str(broken / "a.png"), "--out", str(out),
                 "--workers", "0", "--progress", "false", *ARGS]) == 2
    err = capsys.readouterr().err
    assert "a.png: images: the model gave NaN or inf features for 1 of 1" in err and not out.exists()


def test_embed_refuses_inf_text_features_and_writes_nothing(broken, tmp_path, capsys):
    out = tmp_path / "t.npy"
    assert main(["embed", "--model", str(broken / "inftxt"), "--texts", str(broken / "caps.txt"), "--out", str(out),
                 "--progress", "false", *ARGS]) == 2
    err = capsys.readouterr().err
    assert "caps.txt: texts: the model gave NaN or inf features for 2 of 2" in err and not out.exists()


@pytest.mark.parametrize("which, what", [("inftxt", "labels"), ("nanimg", "images")])
def test_zeroshot_refuses_non_finite_features(broken, capsys, which, what):
    """It printed "nan%" for every label."""
    assert main(["zeroshot", "--model", str(broken / which), "--image", str(broken / "a.png"), "--labels",
                 "cat,dog", *ARGS]) == 2
    out, err = capsys.readouterr()
    assert f"{what}: the model gave NaN or inf features" in err and "nan" not in out


@pytest.mark.parametrize("which", ["inftxt", "nanimg"])
def test_analyze_predict_refuses_non_finite_features(broken, tmp_path, capsys, which):
    """predict.json held "probs": [null, null] beside a figure."""
    assert main(["analyze", "predict", str(broken / which), "--image", str(broken / "a.png"), "--labels", "cat,dog",
                 "--out", str(tmp_path / "p"), *ARGS]) == 2
    assert "the model gave NaN or inf features" in capsys.readouterr().err
    assert not (tmp_path / "p" / "predict.json").exists()


def test_a_supervised_vits_nan_head_is_refused_by_predict(tmp_path):
    from kizuna.analysis.report import load_target, predict_report

    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=3)
    with torch.no_grad():
        vit.head.weight.fill_(float("nan"))
    target = load_target(vit, preprocess={"image_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3},
                         classnames=["a", "b", "c"])
    with pytest.raises(NonFiniteFeatures, match="NaN or inf"):
        predict_report(target, torch.zeros(3, 16, 16), tmp_path)


def test_the_library_classifier_refuses_nan_only_when_asked():
    """The CLI commands ask; the demo's report of a diverged model still draws its predictions."""
    from kizuna.eval.zeroshot import ZeroShotClassifier

    model = _mu(**{"visual.proj.weight": float("nan")})
    tok = kizuna.get_tokenizer(model)
    images = torch.zeros(2, 3, 32, 32)
    assert torch.isnan(ZeroShotClassifier(model, tok, ["cat", "dog"]).predict_proba(images)).all()
    with pytest.raises(NonFiniteFeatures, match="images: the model gave NaN or inf features for 2 of 2"):
        ZeroShotClassifier(model, tok, ["cat", "dog"], refuse_non_finite=True).predict_proba(images)


def test_a_preprocess_std_of_zero_is_an_error_naming_the_field(broken, tmp_path, capsys):
    from kizuna.data.transforms import Preprocess, TrainTransform

    with pytest.raises(ValueError, match=r"preprocess std must be finite and above 0.*\[0\.0, 0\.26, 0\.27\]"):
        kizuna.get_preprocess(kizuna.create_model(str(broken / "std0")))
    with pytest.raises(ValueError, match="preprocess std must be finite and above 0"):
        TrainTransform(std=[0.5, -0.5, 0.5])
    with pytest.raises(ValueError, match="preprocess mean must be finite"):
        Preprocess(mean=[float("nan"), 0.5, 0.5])
    # the command stops before anything is encoded or written (it wrote a .npy of NaN and said "wrote 1")
    out = tmp_path / "e.npy"
    assert main(["embed", "--model", str(broken / "std0"), "--images", str(broken / "a.png"), "--out", str(out),
                 "--workers", "0", "--progress", "false", *ARGS]) == 2
    assert "preprocess std must be finite and above 0" in capsys.readouterr().err and not out.exists()


# ------------------------------------------------------------------ 2. ties in predict.json
def test_predict_json_breaks_ties_to_the_lower_index_as_its_panel(tmp_path):
    """Tensor.argsort is not stable: 20 tied classes came out as class10, class19, class18, ... in predict.json,
    while its own panel and `kizuna zeroshot` put class0 first."""
    from kizuna.analysis.report import load_target, predict_report

    model = _mu()
    with torch.no_grad():
        model.text.proj.weight.zero_()  # every class weight 0: every probability 1/20
    labels = [f"class{i}" for i in range(20)]
    numbers = predict_report(load_target(model), torch.zeros(3, 32, 32), tmp_path, labels, top_k=5)
    assert [name for name, _ in numbers["top"]] == labels[:5]
    assert [name for name, _ in json.loads((tmp_path / "predict.json").read_text())["top"]] == labels[:5]


# ------------------------------------------------------------------ 3. float and 32-bit grey images
def _grey(arr, mode="F"):
    from kizuna.data.transforms import to_rgb

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the inf image gave a RuntimeWarning naming no file
        out = np.asarray(to_rgb(Image.fromarray(np.asarray(arr, np.float32 if mode == "F" else np.int32), mode)))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    return out[..., 0].astype(int)


def test_float_images_keep_their_values_and_one_inf_pixel_does_not_blacken_them():
    ramp = np.linspace(0, 1, 64).reshape(8, 8)
    assert _grey(ramp).max() == 255 and _grey(ramp)[0, 1] == 4  # 0..1: scaled by 255, as before
    assert (_grey(np.full((4, 4), 0.5)) == 128).all()
    one_inf = ramp.copy()
    one_inf[0, 0] = np.inf  # a depth map's "no return": the whole image was black
    assert _grey(one_inf)[0, 0] == 255 and (_grey(one_inf).ravel()[1:] == _grey(ramp).ravel()[1:]).all()
    assert _grey([[np.nan, -np.inf], [0.25, 1.0]]).tolist() == [[0, 0], [64, 255]]
    # values in 0..255 as PIL's convert("RGB") and HF keep them (200 was black, 100..150 stretched to 0..255)
    assert (_grey(np.full((4, 4), 200.0)) == 200).all()
    photo = 100 + 50 * ramp
    pil = np.asarray(Image.fromarray(photo.astype(np.float32), "F").convert("L")).astype(int)
    assert _grey(photo).min() == 100 and _grey(photo).max() == 150 and np.abs(_grey(photo) - pil).max() <= 1
    # another range is stretched over its finite pixels; a constant one outside 0..255 is clipped, as PIL does
    assert _grey([[-3.0, 1000.0, np.inf]]).tolist() == [[0, 255, 255]]
    assert (_grey(np.full((2, 2), 300.0)) == 255).all() and (_grey(np.full((2, 2), -5.0)) == 0).all()


def test_32_bit_grey_in_0_to_255_is_kept_and_16_bit_still_scales_by_its_depth():
    assert (_grey(np.full((4, 4), 200), "I") == 200).all()  # was 1 (200 / 65535)
    assert _grey([[0, 70000]], "I").tolist() == [[0, 255]]  # past 16 bits: the image's own maximum, as before
    from kizuna.data.transforms import to_rgb

    grey16 = np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 30000, np.uint16))))
    assert abs(int(grey16[0, 0, 0]) - round(30000 / 65535 * 255)) <= 1


# ------------------------------------------------------------------ 4. labels the tokenizer reads alike
@pytest.mark.parametrize("labels, named", [("Cat,cat,dog", "'Cat' = 'cat'"),
                                           ("dog,a cat,a  cat", "'a cat' = 'a  cat'")])
def test_zeroshot_refuses_labels_the_tokenizer_reads_alike(broken, tmp_path, capsys, labels, named):
    """parse_labels refused "cat,cat" but not "Cat,cat": one text to CLIP's BPE, an exact 50/50 split."""
    assert main(["zeroshot", "--model", "ViT-mu-8", "--image", str(broken / "a.png"), "--labels", labels,
                 *ARGS]) == 2
    assert f"--labels: {named}: the model's tokenizer reads them alike" in capsys.readouterr().err
    assert main(["analyze", "predict", "ViT-mu-8", "--image", str(broken / "a.png"), "--labels", labels,
                 "--out", str(tmp_path / "p"), *ARGS]) == 2
    assert f"--labels: {named}" in capsys.readouterr().err


def test_labels_alike_only_in_some_prompt_are_kept():
    from kizuna.eval.zeroshot import same_prompts

    tok = kizuna.get_tokenizer("clip_bpe")
    assert same_prompts(tok, ["Cat", "cat", "dog", "a  dog", "a dog"]) == [[0, 1], [3, 4]]
    assert same_prompts(tok, ["cat", "cats"], ["{c}", "a {c}."]) == []


def test_class_names_that_read_alike_are_warned_about():
    from kizuna.eval.datasets import _warn_repeated_classnames

    with pytest.warns(UserWarning, match=r"repeat 'Cat' = 'cat' \(classes 0, 2\); 'a dog' = 'a  dog' \(classes 3, 4\)"
                                         r".*only its first class is ever predicted"):
        _warn_repeated_classnames(["Cat", "dog", "cat", "a dog", "a  dog"], "classnames.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_repeated_classnames(["cat", "cats", "a dog"], "classnames.txt")
