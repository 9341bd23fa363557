"""Inputs that used to give wrong numbers, lose work or end in a traceback (a bug hunt of 2026-12-04):
each test fails on the code before its fix."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds, image_folder, noise_image

from kizuna.apps.cli import main
from kizuna.eval.datasets import DatasetError, load_dataset, read_templates
from kizuna.eval.suite import check_run_values, load_suite, run_suite

CIFAR_ORDER = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_bundled_names_label_folders_only_where_the_folder_names_agree(tmp_path):
    """A folder tree called cifar10 with its own folder names (plane, car, bird, ...) sorts into another order
    than the bundled list: pairing by position called bird/ "airplane". The folder names win there; folders
    that name no bundled class (numbers, wnids) still take the bundled names by position, numbers in
    numeric order (0, 1, 2, ..., 10, not 0, 1, 10, 11)."""
    mine = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    ds = load_dataset(image_folder(tmp_path / "a" / "cifar10", per_class=1, classes=mine))
    assert ds.classnames == sorted(mine) and ds.classnames_source == "folder names"
    assert ds.classnames[ds.labels[ds.keys.index("bird/img0")]] == "bird"
    ds = load_dataset(image_folder(tmp_path / "b" / "cifar10", per_class=1, classes=CIFAR_ORDER))
    assert ds.classnames == CIFAR_ORDER and ds.classnames_source.startswith("bundled")
    numbered = image_folder(tmp_path / "c" / "cifar10", per_class=1, classes=[str(k) for k in range(10)])
    ds = load_dataset(numbered)
    assert ds.classnames == CIFAR_ORDER  # bundled, by position
    assert [ds.classnames[y] for y in ds.labels] == [CIFAR_ORDER[int(k.split("/")[0])] for k in ds.keys]
    many = image_folder(tmp_path / "d" / "counts", per_class=1, classes=[str(k) for k in range(12)])
    ds = load_dataset(many)
    assert ds.classnames == [str(k) for k in range(12)]
    assert all(ds.classnames[y] == k.split("/")[0] for y, k in zip(ds.labels, ds.keys))


def test_a_class_named_train_and_a_stray_text_file_leave_an_image_folder_one(tmp_path):
    """CIFAR-100 has a class "train": beside other class folders it is a class, not a split. A README.txt
    at the root is not a side-car caption file."""
    root = image_folder(tmp_path / "vehicles", per_class=2, classes=["bus", "car", "train"])
    ds = load_dataset(root)
    assert ds.layout == "imagefolder" and ds.classnames == ["bus", "car", "train"] and len(ds) == 6
    (root / "README.txt").write_text("photos of vehicles\n")
    ds = load_dataset(root)
    assert ds.layout == "imagefolder" and len(ds) == 6 and not ds.skips
    split_root = classification_wds(tmp_path / "splits", n=4, split="train")  # real splits still are splits
    with pytest.raises(DatasetError, match="--split train"):
        load_dataset(split_root)


def test_the_linear_probe_scores_test_labels_by_class_name(tmp_path, tiny):
    """A test split without one of the training classes numbered the rest by its own folders: "bird" was
    label 2 in train and 1 in test. Test labels are now mapped into the training classes by name, and a
    test class the training split lacks is an error."""
    from kizuna.eval.linear_probe import _test_labels_in_train_order, evaluate_linear_probe

    train = load_dataset(image_folder(tmp_path / "tr", per_class=3, classes=["airplane", "automobile", "bird"]))
    test = load_dataset(image_folder(tmp_path / "te", per_class=2, classes=["airplane", "bird"]))
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert _test_labels_in_train_order(train, test).tolist() == [0, 0, 2, 2]
    model, _ = tiny
    res = evaluate_linear_probe(model, train, test, few_shot=[], seeds=1, progress=False)
    assert 0.0 <= res.metrics["lp_acc1"] <= 1.0
    res = evaluate_linear_probe(model, train, test, few_shot=[1, 3, 4], seeds=1, progress=False)
    assert sorted(res.few_shot) == [1, 3] and "fewshot_4_acc1_mean" not in res.metrics  # 3 images a class
    assert res.notes == ["3-shot: no training images left for a validation draw, so the penalty is fixed at 0.001 "
                         "instead of swept", "4-shot skipped: a class has only 3 training images"]
    assert all(note in res.table() for note in res.notes)
    odd = load_dataset(image_folder(tmp_path / "odd", per_class=1, classes=["airplane", "zebra"]))
    with pytest.raises(DatasetError, match="classes the training split .* lacks: zebra"):
        _test_labels_in_train_order(train, odd)


def test_the_zero_shot_compared_with_the_probe_scores_the_probes_classes(tmp_path, tiny):
    """With a test split lacking a class, the zero-shot number beside the probe was scored over the test split's
    fewer classes (a higher chance level) than the probe predicts among: 58% against 4% on the same images."""
    from kizuna.eval.classification import class_embeddings, classify_features
    from kizuna.eval.encode import encode_images
    from kizuna.eval.linear_probe import zeroshot_over_train_classes

    model, tok = tiny
    train = load_dataset(image_folder(tmp_path / "tr", per_class=2, classes=["airplane", "automobile", "bird"]))
    test = load_dataset(image_folder(tmp_path / "te", per_class=3, classes=["airplane", "bird"]))
    feats = encode_images(model, test, progress=False)
    weights = class_embeddings(model, tok, train.classnames, test.templates or ["a photo of a {c}."])
    scores = feats.features @ weights.T  # over all three classes: airplane 0, bird 2
    expected = float((scores.argmax(1) == torch.tensor([0, 0, 0, 2, 2, 2])).float().mean())
    assert zeroshot_over_train_classes(model, tok, train, test, progress=False) == pytest.approx(expected)
    assert zeroshot_over_train_classes(model, tok, train, test, feats) == pytest.approx(expected)
    same = classify_features(feats.features, test.labels, class_embeddings(model, tok, test.classnames, ["a photo of a {c}."]),
                             test.classnames).metrics["acc1"]
    assert zeroshot_over_train_classes(model, tok, test, test, feats) == pytest.approx(same)  # same classes: as before


def test_templates_that_cannot_be_filled_are_named(tmp_path):
    with pytest.raises(DatasetError, match=r"other braces must be doubled"):
        read_templates(["a photo of {} in {style}"])
    assert read_templates(["a {c} in {{style}}", "a {{literal}} {}"])
    with pytest.raises(DatasetError, match=r"other braces must be doubled"):  # {c} as CLIP_benchmark: format(c=)
        read_templates(["a {c} in {style}"])
    f = tmp_path / "t.json"
    f.write_text(json.dumps(["a photo of {c}", 5]))
    with pytest.raises(DatasetError, match="5 .* is not text"):
        read_templates(f)


def test_run_values_are_checked_and_normalised():
    r = {"few_shot": 2, "severities": "1,3", "corruptions": "jpeg,contrast"}
    check_run_values(r, "run 0")
    assert r == {"few_shot": [2], "severities": [1, 3], "corruptions": ["jpeg", "contrast"]}
    check_run_values({"max_samples": 0, "max_train_samples": None}, "run 0")  # 0 and None: all
    for none in (0, "0", "none", "off"):  # as the command line's --few-shot (a suite refused them)
        r = {"few_shot": none}
        check_run_values(r, "run 0")
        assert r == {"few_shot": []}
    for bad, what in (({"seeds": 0}, "seeds"), ({"batch_size": 0}, "batch_size"), ({"relation_groups": 0}, "relation_groups"),
                      ({"severities": []}, "severities"), ({"severities": [0]}, "severities"),
                      ({"few_shot": [0, 2]}, "few_shot"), ({"query_chunk": 0}, "query_chunk"),
                      ({"max_samples": -5}, "max_samples must be an integer >= 0"),
                      ({"max_train_samples": -1}, "max_train_samples"), ({"max_samples": 2.5}, "max_samples"),
                      ({"corruptions": "jpeg,fog"}, r"unknown corruption\(s\) 'fog'")):
        with pytest.raises(ValueError, match=f"run 0: {what}"):
            check_run_values(bad, "run 0")


def test_a_suite_refuses_unknown_keys_and_missing_datasets_before_it_starts(tmp_path):
    d = image_folder(tmp_path / "d", per_class=1)
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"defaults": {"batchsize": 8}, "runs": [{"model": "m", "dataset": str(d), "task": "zeroshot"}]}))
    with pytest.raises(ValueError, match="defaults: unknown key.*'batchsize'"):  # (named as defaults: session 50)
        load_suite(f)
    f.write_text(json.dumps({"runs": [{"model": "m", "dataset": str(d), "task": "zeroshot", "batchsize": 8}]}))
    with pytest.raises(ValueError, match="run 0: unknown key.*'batchsize'"):
        load_suite(f)
    f.write_text(json.dumps({"default": {}, "runs": []}))
    with pytest.raises(ValueError, match="unknown top-level key.*'default'"):
        load_suite(f)
    f.write_text(json.dumps([{"model": "ViT-mu-8", "dataset": str(d), "task": "zeroshot"},
                             {"model": "ViT-mu-8", "dataset": str(tmp_path / "nowhere"), "task": "zeroshot"}]))
    with pytest.raises(FileNotFoundError, match="run 1: dataset not found"):
        load_suite(f)
    # a model path with a typo stopped the suite after the runs before it
    f.write_text(json.dumps([{"model": "ViT-mu-8", "dataset": str(d), "task": "zeroshot"},
                             {"model": str(tmp_path / "runs" / "modle"), "dataset": str(d), "task": "zeroshot"}]))
    with pytest.raises(ValueError, match="run 1: .*modle: no such checkpoint"):
        load_suite(f)


def test_a_suite_keeps_finished_runs_tells_csv_columns_apart_and_names_plots_apart(tmp_path, tiny_hf):
    """A later run's bad dataset setting is refused before the first run (it was found after the earlier runs'
    work); two runs on one CSV with other label columns are two datasets (they shared one); two confusion plots
    of one name no longer overwrite."""
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(noise_image(i))
    (tmp_path / "d.csv").write_text("filepath,label,kind\n" + "".join(
        f"{i}.png,{['apple', 'pear', 'fig'][i % 3]},{['fruit', 'tree'][i % 2]}\n" for i in range(6)))
    run = {"model": str(tiny_hf[0]), "dataset": str(tmp_path / "d.csv"), "task": "zeroshot", "batch_size": 4}
    suite = {"runs": [run, {**run, "label_column": "kind"}, {**run, "label_column": "no_such_column"}]}
    out = tmp_path / "out"
    (tmp_path / "s.json").write_text(json.dumps(suite))
    with pytest.raises(Exception, match="run 2: .*no_such_column"):
        run_suite(tmp_path / "s.json", out_dir=out, progress=False, echo=None)
    assert not (out / "results.json").exists()  # no run's work was done
    (tmp_path / "s.json").write_text(json.dumps({"runs": suite["runs"][:2]}))
    run_suite(tmp_path / "s.json", out_dir=out, progress=False, echo=None)
    saved = json.loads((out / "results.json").read_text())
    assert [r["details"]["num_classes"] for r in saved] == [3, 2]
    plots = [r["details"]["plots"][0] for r in saved]
    assert len(set(plots)) == 2 and all((out / p).is_file() for p in plots)


def test_cli_refusals_are_one_line(tmp_path, tiny_hf, capsys):
    model = str(tiny_hf[0])
    one = image_folder(tmp_path / "one", per_class=2, classes=["cat"])
    assert main(["eval", "probes", "--model", model, "--dataset", str(one), "--no-relation-swap", "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 2  # before the robustness work, not after it
    assert "needs at least two classes" in capsys.readouterr().err
    assert main(["eval", "linear-probe", "--model", model, "--dataset", str(one), "--seeds", "0"]) == 2
    assert "kizuna eval linear-probe: error: --seeds must be an integer >= 1" in capsys.readouterr().err
    assert main(["eval", "zeroshot", "--model", model, "--dataset", str(one), "--batch-size", "0"]) == 2
    assert "kizuna eval zeroshot: error: --batch-size must be an integer >= 1" in capsys.readouterr().err
    img = tmp_path / "one" / "cat" / "img0.png"
    assert main(["zeroshot", "--model", model, "--image", str(img), "--labels", "a,b", "--top", "0"]) == 2
    assert "--top must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["zeroshot", "--model", model, "--image", str(img), "--labels", "a,b", "--device", "gpu7"])
    assert e.value.code == 2 and "'gpu7' is not a device" in capsys.readouterr().err
    for other in ("mps", "meta", "xpu"):  # torch devices kizuna does not run on: a traceback from .to(device) before
        with pytest.raises(SystemExit):
            main(["zeroshot", "--model", model, "--image", str(img), "--labels", "a,b", "--device", other])
        assert f"'{other}': kizuna runs on cpu or cuda" in capsys.readouterr().err


def test_retrieval_passes_its_query_chunk(tmp_path, tiny_hf, monkeypatch):
    from _evalhelpers import retrieval_wds

    import kizuna.eval.retrieval as retrieval

    seen = {}
    real = retrieval.evaluate_retrieval

    def spy(*a, **kw):
        seen["query_chunk"] = kw.get("query_chunk")
        return real(*a, **kw)

    monkeypatch.setattr(retrieval, "evaluate_retrieval", spy)
    ret = retrieval_wds(tmp_path / "ret", n=6)
    assert main(["eval", "retrieval", "--model", str(tiny_hf[0]), "--dataset", str(ret), "--query-chunk", "3",
                 "--no-progress"]) == 0
    assert seen["query_chunk"] == 3


def test_embed_does_not_overwrite_its_own_input(tmp_path, tiny_hf, capsys):
    texts = tmp_path / "c.txt"
    texts.write_text("a dog\n\n  a cat  \n")
    assert main(["embed", "--model", str(tiny_hf[0]), "--texts", str(texts), "--out", str(tmp_path / "c.npy")]) == 2
    assert "which is the input --texts" in capsys.readouterr().err
    assert texts.read_text() == "a dog\n\n  a cat  \n"
    assert main(["embed", "--model", str(tiny_hf[0]), "--texts", str(texts), "--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape[0] == 2
    # the blank line is said (row 2 is line 3): it vanished without a word, and rows shifted against the lines
    assert "skipped 1 blank line(s) (rows follow the lines with text" in capsys.readouterr().err


def test_embed_takes_one_image_names_a_missing_one_and_info_lists_as_json(tmp_path, tiny_hf, capsys):
    """One image file was refused ("--images takes a folder"), though the README and `analyze` take one."""
    (tmp_path / "a.png").write_bytes(noise_image(0))
    assert main(["embed", "--model", str(tiny_hf[0]), "--images", str(tmp_path / "a.png"), "--out",
                 str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape[0] == 1
    assert main(["embed", "--model", str(tiny_hf[0]), "--images", str(tmp_path / "no"), "--out",
                 str(tmp_path / "f.npy")]) == 2
    assert "no such folder or file" in capsys.readouterr().err
    assert main(["info", "list", "--json"]) == 0
    assert "ViT-B-32" in json.loads(capsys.readouterr().out)


def test_info_says_when_it_has_no_flop_count(tmp_path, capsys):
    import kizuna
    from kizuna.models.clip import ClipModel

    cfg = kizuna.clip_config("ViT-mu-8")
    cfg.vision.stem, cfg.vision.patch_size, cfg.vision.stem_channels = "conv", 1, [8, 16]
    kizuna.save_model(ClipModel(cfg), tmp_path / "conv")
    assert main(["info", str(tmp_path / "conv")]) == 0
    out = capsys.readouterr().out
    assert "GFLOPs of the image tower: not counted for a conv or ResNet stem" in out
    # the text tower is a plain transformer: it was left out with the image tower's count
    from kizuna.models.flops import text_flops

    assert f"GFLOPs: text {text_flops(cfg.text) / 1e9:.4g}  (2 x MACs, one text)" in out
    assert main(["info", str(tmp_path / "conv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gflops"] == {"text": float(f"{text_flops(cfg.text) / 1e9:.4g}")}


def test_a_vit_classifier_given_to_an_image_text_command_is_named(tmp_path, capsys):
    """zeroshot and embed failed with an AttributeError traceback, eval commands with a page-long module dump."""
    import kizuna
    from kizuna.models.vit import VisionConfig, VisionTransformer

    kizuna.save_model(VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=16, depth=1, heads=2,
                                                     num_classes=3)), tmp_path / "vit")
    one = image_folder(tmp_path / "one", per_class=2, classes=["cat", "dog"])
    img = tmp_path / "one" / "cat" / "img0.png"
    for argv in (["zeroshot", "--image", str(img), "--labels", "a,b"], ["embed", "--images", str(one), "--out",
                                                                         str(tmp_path / "e.npy")],
                 ["eval", "zeroshot", "--dataset", str(one), "--no-progress"]):
        assert main([*argv[:2], "--model", str(tmp_path / "vit"), *argv[2:]] if argv[0] == "eval" else
                    [argv[0], "--model", str(tmp_path / "vit"), *argv[1:]]) == 2, argv
        err = capsys.readouterr().err
        assert "is a VisionTransformer: an image classifier without a text tower" in err and "kizuna vit eval" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_a_preset_name_says_its_weights_are_random(tmp_path, capsys):
    one = image_folder(tmp_path / "one", per_class=1, classes=["cat"])
    assert main(["zeroshot", "--model", "ViT-mu-8", "--image", str(tmp_path / "one" / "cat" / "img0.png"),
                 "--labels", "a,b"]) == 0
    assert "ViT-mu-8 is a preset name: its weights are random" in capsys.readouterr().err
    assert one.is_dir()


def test_a_labels_file_that_is_not_there_is_not_a_label():
    """--labels lables.txt (a typo) classified against the one label "lables.txt", at 100%."""
    from kizuna.apps.zeroshot import parse_labels

    with pytest.raises(ValueError, match="--labels lables.txt: no such file"):
        parse_labels("lables.txt")
    with pytest.raises(ValueError, match="repeated label"):
        parse_labels("cat,dog,cat")
    assert parse_labels("cat, dog") == ["cat", "dog"]


def test_a_labels_file_may_have_blank_lines(tmp_path):
    """Candidate labels are no class names file (no line numbers a class): a blank line is just skipped."""
    from kizuna.apps.zeroshot import parse_labels

    (tmp_path / "labels.txt").write_text("dog\ncat\n\nbird\n")
    assert parse_labels(str(tmp_path / "labels.txt")) == ["dog", "cat", "bird"]


def test_embed_says_how_many_texts_it_cut(tmp_path, capsys):
    """Texts over the context length were embedded cut, without a word."""
    texts = tmp_path / "t.txt"
    texts.write_text("a dog\n" + " ".join(["word"] * 200) + "\n")
    assert main(["embed", "--model", "ViT-mu-8", "--texts", str(texts), "--out", str(tmp_path / "e.npy")]) == 0
    assert "note: 1 of 2 texts are longer than the model's 77 tokens" in capsys.readouterr().err


def test_negative_sample_counts_are_refused_by_the_cli(tmp_path, capsys):
    """--max-samples -5 silently meant "all"."""
    one = image_folder(tmp_path / "one", per_class=1, classes=["cat", "dog"])
    for argv in (["zeroshot", "--max-samples", "-5"], ["linear-probe", "--max-train-samples", "-1"]):
        with pytest.raises(SystemExit) as e:
            main(["eval", argv[0], "--model", "ViT-mu-8", "--dataset", str(one), *argv[1:]])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {argv[1]}: expected an integer >= 0 (0 = all), got {argv[2][1:] and int(argv[2])}" in err


def test_unknown_corruptions_are_refused_before_the_model_or_any_image_is_touched(tmp_path, monkeypatch, capsys):
    import kizuna.eval.encode as encode
    import kizuna.eval.probes  # noqa: F401  (imported first: imported while encode_images is patched, its
    import kizuna.eval.suite as suite  # `from .encode import encode_images` kept the patch for the next tests)

    def nothing(*a, **k):
        raise AssertionError("started work before checking --corruptions")

    monkeypatch.setattr(encode, "encode_images", nothing)
    monkeypatch.setattr(suite._Context, "model", nothing)
    one = image_folder(tmp_path / "one", per_class=1, classes=["cat", "dog"])
    assert main(["eval", "probes", "--model", "ViT-mu-8", "--dataset", str(one), "--corruptions", "jpeg,foo",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown corruption(s) 'foo' (known: gaussian_blur, gaussian_noise, jpeg, contrast)" in err


def test_the_linear_probe_command_passes_its_cache_dir_to_the_zeroshot_comparison(tmp_path, tiny_hf):
    """--cache-dir was accepted by `kizuna eval linear-probe` and then not used."""
    root = classification_wds(tmp_path / "d", n=8, split="train")
    classification_wds(tmp_path / "d", n=6, split="test", seed=3)
    cache = tmp_path / "cache"
    assert main(["eval", "linear-probe", "--model", str(tiny_hf[0]), "--dataset", str(root), "--few-shot", "none",
                 "--cache-dir", str(cache), "--no-progress"]) == 0
    assert len(list(cache.glob("classes-*.pt"))) == 1


def test_the_typographic_record_has_its_image_count_and_skips(tmp_path, tiny_hf, capsys):
    root = classification_wds(tmp_path / "d", n=6, corrupt=(2,))
    out = tmp_path / "o"
    assert main(["eval", "probes", "--model", str(tiny_hf[0]), "--dataset", str(root), "--no-robustness",
                 "--no-relation-swap", "--out", str(out), "--no-progress"]) == 0
    assert "typographic attack on d (5 images; skipped 1 samples: corrupt_image=1" in capsys.readouterr().out
    rec = json.loads((out / "results.json").read_text())[0]
    assert rec["task"] == "typographic" and rec["details"]["n"] == 5
    assert rec["details"]["skipped"] == {"corrupt_image": 1}


def test_a_zeroshot_template_that_cannot_be_filled_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """`kizuna zeroshot --template "a {} in {style}"` loaded the model, then ended in a KeyError traceback."""
    import kizuna.apps.zeroshot as app

    def no_model(args):
        raise AssertionError("loaded the model before checking --template")

    monkeypatch.setattr(app, "load_model_from_args", no_model)
    (tmp_path / "a.png").write_bytes(noise_image(0))
    for template in ("a {} in {style}", "a photo"):
        assert main(["zeroshot", "--model", "ViT-mu-8", "--image", str(tmp_path / "a.png"), "--labels", "cat,dog",
                     "--template", "a photo of a {c}.", "--template", template]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kizuna zeroshot: error: --template") and repr(template) in err and "{c}" in err
        assert "Traceback" not in err


def test_embed_checks_its_output_and_texts_before_loading_the_model(tmp_path, tiny_hf, capsys, monkeypatch):
    """A folder as --out, a missing --texts: found after the model loaded (and, for --out, after every image
    had been embedded)."""
    from kizuna.apps import embed

    monkeypatch.setattr(embed, "load_model_from_args", lambda args: pytest.fail("the model was loaded"))
    texts = tmp_path / "t.txt"
    texts.write_text("a dog\n")
    (tmp_path / "dir.npy").mkdir()
    cases = ((["--texts", str(texts), "--out", str(tmp_path / "dir.npy")], "is a folder"),
             (["--texts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "e.npy")], "no such file"),
             (["--texts", str(texts), "--out", str(texts / "sub" / "e.npy")], "cannot write in"))
    for argv, what in cases:
        assert main(["embed", "--model", str(tiny_hf[0]), *argv]) == 2
        assert what in capsys.readouterr().err


def test_embed_skips_an_image_it_cannot_read_and_names_it(tmp_path, tiny_hf, capsys, monkeypatch):
    """A PermissionError from reading one file stopped the whole run with a worker traceback."""
    from pathlib import Path

    for i in range(3):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        (tmp_path / "imgs" / f"{i}.png").write_bytes(noise_image(i))
    read = Path.read_bytes

    def locked(self):
        if self.name == "1.png":
            raise PermissionError(13, "Permission denied")
        return read(self)

    monkeypatch.setattr(Path, "read_bytes", locked)
    assert main(["embed", "--model", str(tiny_hf[0]), "--images", str(tmp_path / "imgs"), "--workers", "0",
                 "--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape[0] == 2
    err = capsys.readouterr().err
    assert "1.png: cannot be read (Permission denied)" in err and "Traceback" not in err


def test_embed_writes_one_row_per_line_and_skips_lines_with_no_text(tmp_path, capsys):
    """U+2028 and a form feed split lines (5 rows for 3 lines), and a line of "&nbsp;", not blank but
    empty once cleaned, stopped the job at "index 43" of its batch."""
    import numpy as np

    texts = tmp_path / "t.txt"
    texts.write_text("a dog\u2028on the grass\r\nthe cat\x0csleeps\n&nbsp;\n\nbird\n", encoding="utf-8")
    out = tmp_path / "e.npy"
    assert main(["embed", "--model", "ViT-mu-8", "--texts", str(texts), "--out", str(out), "--progress", "false"]) == 0
    assert "skipped 1 line(s) with no text left once cleaned (not in the output): line 3" in capsys.readouterr().err
    # one row a line also for readers that split at U+2028 (Python's splitlines): the breaks are escapes there (as
    # spaces, two inputs differing in a break alone were named alike: test_embed_findings_s50)
    assert out.with_suffix(".txt").read_text().splitlines() == ["a dog\\u2028on the grass", "the cat\\x0csleeps",
                                                                "bird"]
    assert np.load(out).shape[0] == 3


def test_embed_counts_the_texts_cut_with_the_tokenizers_own_special_tokens(tmp_path, capsys, monkeypatch):
    """SigLIP's tokenizer adds only an end token: a text of context - 1 ids fits, and was reported as cut
    (the count assumed CLIP's start and end tokens). A stand-in without a start token, over CLIP's BPE."""
    import kizuna
    from kizuna.apps import embed

    model = kizuna.create_model("ViT-mu-8")
    clip = kizuna.get_tokenizer(model)

    class EndTokenOnly:
        context_length = 8

        def encode_batch(self, texts):
            return clip.encode_batch(texts)

        def __call__(self, texts):
            return clip(texts, context_length=self.context_length)

    monkeypatch.setattr(kizuna, "get_tokenizer", lambda m: EndTokenOnly())
    monkeypatch.setattr(embed, "load_model_from_args", lambda args: model)
    texts = tmp_path / "t.txt"
    texts.write_text("dog " * 7 + "\n" + "dog " * 8 + "\n")  # 7 ids + the end token fit in 8; 8 do not
    assert main(["embed", "--model", "m", "--texts", str(texts), "--out", str(tmp_path / "e.npy")]) == 0
    assert "note: 1 of 2 texts are longer than the model's 8 tokens" in capsys.readouterr().err


def test_embed_refuses_an_empty_images_or_texts_value(tmp_path, capsys):
    """--images "" (an unset shell variable) loaded the model, then embedded texts from None: a traceback."""
    for flag in ("--images", "--texts"):
        assert main(["embed", "--model", "ViT-mu-8", flag, "", "--out", str(tmp_path / "e.npy")]) == 2
        err = capsys.readouterr().err
        assert f"{flag} is empty" in err and "Traceback" not in err


def test_embed_writes_a_file_name_that_is_not_utf8_and_never_half_its_output(tmp_path, capsys):
    """A Latin-1 name ("caf\\xe9.png") failed writing the row list after the .npy was written: an array
    beside an empty list of its rows."""
    import os

    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(noise_image(0))
    latin1 = os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.png")
    Path(latin1).write_bytes(noise_image(1))
    for out in (tmp_path / "e.npy", tmp_path / "e.parquet"):
        assert main(["embed", "--model", "ViT-mu-8", "--images", str(folder), "--workers", "0",
                     "--out", str(out), "--progress", "false"]) == 0, capsys.readouterr().err
    rows = (tmp_path / "e.txt").read_text(encoding="utf-8").splitlines()
    assert len(rows) == np.load(tmp_path / "e.npy").shape[0] == 2 and rows[1].endswith("caf\\xe9.png")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _images(folder: Path, n: int) -> None:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / "img" / f"{i}.png").write_bytes(noise_image(i))


def test_csv_class_indices_written_as_floats_or_with_a_typo_stay_indices(tmp_path):
    """One label that was no integer (pandas writes an int column holding a NaN as 0.0, 1.0, ..., blank) made
    every label a class name, and --dataset-name's classes were ignored. "3.0" is 3; when most labels are
    indices, the others are counted skips naming the row."""
    _images(tmp_path, 5)
    (tmp_path / "float.csv").write_text("filepath,label\nimg/0.png,0.0\nimg/1.png,1.0\nimg/2.png,3.0\nimg/3.png,\n"
                                        "img/4.png,x1\n")
    ds = load_dataset(tmp_path / "float.csv", dataset_name="cifar10")
    assert ds.classnames == CIFAR_ORDER and ds.labels.tolist() == [0, 1, 3]
    assert ds.skips == {"missing_label": 1, "bad_label": 1}
    assert ds.skips.examples["bad_label"] == [f"row 6 (img/4.png) in {tmp_path}/float.csv: label 'x1'"]
    # with classnames.txt beside it, the column was read as names and row 2's "0" was blamed
    (tmp_path / "classnames.txt").write_text("\n".join(CIFAR_ORDER) + "\n")
    (tmp_path / "typo.csv").write_text("filepath,label\nimg/0.png,0\nimg/1.png,1\nimg/2.png,3\nimg/3.png,3.0\n")
    assert load_dataset(tmp_path / "typo.csv").labels.tolist() == [0, 1, 3, 3]
    (tmp_path / "classnames.txt").unlink()
    (tmp_path / "mixed.csv").write_text("filepath,label\nimg/0.png,cat\nimg/1.png,dog\nimg/2.png,1\nimg/3.png,0\n")
    with pytest.raises(DatasetError, match=r"mixes class names and class indices .*'1' in row 4"):
        load_dataset(tmp_path / "mixed.csv")


def test_a_tsv_label_column_is_read_without_quoting(tmp_path):
    """A caption starting with '"' in a classification TSV swallowed the rows after it, labels included."""
    _images(tmp_path, 3)
    (tmp_path / "cls.tsv").write_text('filepath\ttitle\tlabel\nimg/0.png\t"Unbalanced cat\t0\n'
                                      'img/1.png\ta dog\t1\nimg/2.png\tanother\t1\n')
    ds = load_dataset(tmp_path / "cls.tsv", classnames=["cat", "dog"])
    assert ds.labels.tolist() == [0, 1, 1] and not ds.skips


def test_shards_unpacked_one_per_folder_are_labelled_by_their_cls_files(tmp_path):
    """test/000000/KEY.png + KEY.cls was read as an ImageFolder whose classes were the folder names."""
    root = tmp_path / "unp"
    labels = [2, 0, 1, 2, 1, 0]
    for i, y in enumerate(labels):
        d = root / "test" / f"{i // 3:06d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:09d}.png").write_bytes(noise_image(i))
        (d / f"{i:09d}.cls").write_text(f"{y}\n")
    (root / "classnames.txt").write_text("cat\ndog\ncar\n")
    ds = load_dataset(root)
    assert ds.layout == "folder" and ds.classnames == ["cat", "dog", "car"]
    assert ds.labels.tolist() == labels and not ds.skips


def test_an_image_outside_the_class_folders_is_counted_once(tmp_path):
    root = image_folder(tmp_path / "pets", per_class=2, classes=["cat", "dog"])
    (root / "loose.png").write_bytes(noise_image(9))
    ds = load_dataset(root)
    assert ds.layout == "imagefolder" and len(ds) == 4
    assert ds.skips == {"image_outside_class_folder": 1}
    assert ds.skips.examples["image_outside_class_folder"] == [f"loose in folder {root}"]


def test_a_classification_csv_that_is_not_utf8_is_named(tmp_path):
    _images(tmp_path, 1)
    (tmp_path / "latin.csv").write_bytes("filepath,label\nimg/0.png,café\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin.csv: not UTF-8 text .*byte 0xe9.*save it as UTF-8"):
        load_dataset(tmp_path / "latin.csv")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as Linux has them")
def test_a_failed_npy_write_keeps_the_old_file_and_says_so(tmp_path):
    """np.save's last buffered flush failed unchecked: a cut-off .npy replaced the good one, exit 0."""
    import subprocess
    import textwrap

    good = tmp_path / "e.npy"
    np.save(good, np.ones((8, 16), np.float32))
    before = good.read_bytes()
    code = textwrap.dedent(f"""
        import resource, signal, numpy as np
        from kizuna.apps.embed import write_embeddings
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))
        try:
            from pathlib import Path
            write_embeddings(Path({str(good)!r}), [str(i) for i in range(12)], np.zeros((12, 16), np.float32), "path")
        except OSError as e:
            print("refused:", e.errno)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused:" in done.stdout, done.stdout + done.stderr
    assert good.read_bytes() == before


def test_a_csv_of_class_names_lacking_a_class_keeps_the_named_datasets_list(tmp_path):
    """With --dataset-name cifar10, a CSV whose label column names classes took its sorted values as the classes:
    a split without "airplane" was scored over its own 2 classes (cat 0, dog 1), not CIFAR-10's 10 by name, as
    the ImageFolder of the same split is. Without a dataset name, the values are the classes, as before."""
    _images(tmp_path, 3)
    (tmp_path / "names.csv").write_text("filepath,label\nimg/0.png,cat\nimg/1.png,Dog\nimg/2.png,cat\n")
    ds = load_dataset(tmp_path / "names.csv", dataset_name="cifar10")
    assert ds.classnames == CIFAR_ORDER and ds.classnames_source.startswith("bundled")
    assert ds.labels.tolist() == [3, 5, 3]
    own = load_dataset(tmp_path / "names.csv")
    assert own.classnames == ["Dog", "cat"] and own.labels.tolist() == [1, 0, 1]
    (tmp_path / "other.csv").write_text("filepath,label\nimg/0.png,cat\nimg/1.png,lion\n")  # not all CIFAR-10's
    assert load_dataset(tmp_path / "other.csv", dataset_name="cifar10").classnames == ["cat", "lion"]


def test_zeroshot_of_many_images_encodes_them_a_batch_at_a_time(tmp_path, tiny_hf, capsys, monkeypatch):
    """`kizuna zeroshot --image photos/*.jpg` held every photo decoded at full size and encoded all of them as one
    batch (2 GB for 400 photos of 1 MP): a batch at a time now, with the same table per image."""
    import kizuna.apps.zeroshot as app
    from kizuna.eval.zeroshot import ZeroShotClassifier

    folder = image_folder(tmp_path / "f", per_class=3, classes=["cat", "dog"])
    images = sorted(str(p) for p in folder.rglob("*.png"))
    argv = ["zeroshot", "--model", str(tiny_hf[0]), "--labels", "a cat,a dog,a car", "--image"]
    assert main(argv + images) == 0
    whole = capsys.readouterr().out
    sizes, topk = [], ZeroShotClassifier.topk
    monkeypatch.setattr(ZeroShotClassifier, "topk", lambda self, batch, k: sizes.append(len(batch)) or topk(self, batch, k))
    monkeypatch.setattr(app, "_BATCH", 4)
    assert main(argv + images) == 0
    assert sizes == [4, 2] and capsys.readouterr().out == whole
    with pytest.raises(ValueError, match=r"repeated label\(s\) 'a', 'b'"):
        app.parse_labels("a,b,c,b,a")


def test_max_train_samples_0_means_all_on_the_command_line_as_in_a_suite(tmp_path, tiny_hf, capsys):
    """`--max-train-samples 0` fitted on --max-samples' count (4 of 8) while a suite's 0 meant all (the docs said
    "0: all" for both); left out, it still follows --max-samples."""
    root = classification_wds(tmp_path / "d", n=8, split="train")
    classification_wds(tmp_path / "d", n=6, split="test", seed=3)
    common = ["eval", "linear-probe", "--model", str(tiny_hf[0]), "--dataset", str(root), "--few-shot", "none",
              "--no-zeroshot", "--max-samples", "4", "--no-progress"]
    assert main(common + ["--max-train-samples", "0"]) == 0
    assert "8 images" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith("train:"))
    assert main(common) == 0
    assert "4 images" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith("train:"))
