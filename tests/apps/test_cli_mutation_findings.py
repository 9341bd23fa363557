"""The command-line wiring of `kizuna eval`, `kizuna analyze`, `kizuna vit` and `kizuna train`: which flag reaches
which function with which value, the defaults the help states, the refusals that name a flag, and the files
written. A mutation hunt found each of these unchecked: a flag dropped on its way to the task, a default changed or
a check removed, and every test still passed. The tasks themselves are replaced by stand-ins that record what they
were given (their own numbers are tested elsewhere), so the file runs in a few seconds."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.apps.cli import build_parser, main


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _png(path, seed: int = 0, size: int = 16) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


# ============================================================================ kizuna eval: what reaches run_entry
@pytest.fixture
def entries(monkeypatch):
    """run_entry replaced by a recorder: each eval command's one run, as the task would receive it."""
    import kizuna.eval.suite as S

    seen = []

    def record(e, ctx=None, out_dir=None, progress=True, **kw):
        seen.append({**e, "_out": out_dir, "_progress": progress})
        return []

    monkeypatch.setattr(S, "run_entry", record)
    return seen


def _eval(*argv) -> int:
    return main(["eval", *argv, "--model", "ViT-mu-8", "--no-progress"])


def test_eval_zeroshot_passes_every_flag_to_its_run(entries, tmp_path):
    """_entry: --max-samples, --act, --label-column and --name were each dropped (a constant put in their place)
    and the run still went: the GELU model ran as QuickGELU, all images were scored, the report kept the path."""
    assert _eval("zeroshot", "--dataset", str(tmp_path / "d"), "--max-samples", "7", "--act", "gelu",
                 "--label-column", "cls", "--image-column", "img", "--name", "mine", "--batch-size", "5",
                 "--dataset-name", "cifar10", "--split", "val") == 0
    (e,) = entries
    assert e["task"] == ["zeroshot_classification"]
    assert (e["max_samples"], e["act"], e["label_column"], e["image_column"]) == (7, "gelu", "cls", "img")
    assert (e["name"], e["batch_size"], e["dataset_name"], e["split"]) == ("mine", 5, "cifar10", "val")
    assert e["dataset"] == str(tmp_path / "d") and e["_progress"] is False


def test_eval_takes_max_samples_0_as_all_and_refuses_a_negative_by_its_flag(entries, tmp_path, capsys):
    """_count: `n <= 0` refused the documented 0 (= all)."""
    assert _eval("zeroshot", "--dataset", str(tmp_path), "--max-samples", "0") == 0
    assert entries[0]["max_samples"] == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "zeroshot", "--model", "m", "--dataset", "d", "--max-samples", "-1"])
    assert "argument --max-samples" in capsys.readouterr().err


def test_eval_retrieval_defaults_to_the_title_column_and_passes_query_chunk(entries, tmp_path):
    """--caption-column's default is "title" (CLIP_benchmark's CSV; the help says so), and --query-chunk reached
    the run (dropped, the task used its own 1024)."""
    csv = tmp_path / "pairs.csv"  # (a CSV: a column flag for a folder is refused)
    csv.write_text("filepath,cap\n")
    assert _eval("retrieval", "--dataset", str(tmp_path)) == 0
    assert _eval("retrieval", "--dataset", str(csv), "--query-chunk", "3", "--caption-column", "cap") == 0
    first, second = entries
    assert first["task"] == ["zeroshot_retrieval"]
    assert (first["caption_column"], first["query_chunk"]) == ("title", 1024)
    assert (second["caption_column"], second["query_chunk"]) == ("cap", 3)


def test_eval_templates_file_is_read_under_the_given_dataset_name(entries, tmp_path):
    """A CLIP_benchmark .json of templates pooled with another template is read under --dataset-name (the key
    load_dataset uses); the folder's own name was used instead and found no templates for it."""
    js = tmp_path / "templates.json"
    js.write_text(json.dumps({"cifar10": ["a {c} picture."], "other": ["wrong {c}."]}))
    assert _eval("zeroshot", "--dataset", str(tmp_path / "other"), "--dataset-name", "cifar10",
                 "--templates", str(js), "--templates", "one {c}.") == 0
    assert entries[0]["templates"] == ["a {c} picture.", "one {c}."]


def test_eval_linear_probe_defaults_and_switches(entries, tmp_path):
    """The help's defaults: --few-shot 1,2,4,8,16, --seeds 3, --train-split train, zero-shot compared;
    --no-zeroshot turned it off (inverted, it ran only when refused); --max-train-samples 0 is passed as 0
    (all, as in a suite) and left out when not given."""
    assert _eval("linear-probe", "--dataset", str(tmp_path)) == 0
    assert _eval("linear-probe", "--dataset", str(tmp_path), "--no-zeroshot", "--max-train-samples", "0",
                 "--few-shot", "0", "--seeds", "2", "--train-split", "val") == 0
    a, b = entries
    assert (a["few_shot"], a["seeds"], a["train_split"], a["zeroshot"]) == ([1, 2, 4, 8, 16], 3, "train", True)
    assert "max_train_samples" not in a
    assert (b["few_shot"], b["seeds"], b["train_split"], b["zeroshot"]) == ([], 2, "val", False)
    assert b["max_train_samples"] == 0


def test_eval_probes_runs_the_probes_asked_for_with_the_documented_defaults(entries, tmp_path):
    """Each --no-* switch drops its own probe (one read another's switch), the default severities are 1,3,5 and
    the default relation groups 100 (as the help says); without --dataset only the relation swap runs."""
    d = str(tmp_path)
    assert _eval("probes", "--dataset", d) == 0
    assert _eval("probes", "--dataset", d, "--no-robustness") == 0
    assert _eval("probes", "--dataset", d, "--no-typographic", "--no-relation-swap", "--severities", "5,2") == 0
    assert _eval("probes") == 0
    tasks = [e["task"] for e in entries]
    assert tasks == [["robustness", "typographic", "relation_swap"], ["typographic", "relation_swap"],
                     ["robustness"], ["relation_swap"]]
    assert entries[0]["severities"] == [1, 3, 5] and entries[0]["relation_groups"] == 100
    assert entries[2]["severities"] == [5, 2]


def test_eval_probes_corruptions_are_deduplicated_and_an_empty_list_is_refused(entries, tmp_path, capsys):
    """--corruptions "jpeg,jpeg" ran JPEG once; "," named none and was refused by its flag (the suite reads an
    empty list as all of them)."""
    assert _eval("probes", "--dataset", str(tmp_path), "--corruptions", "jpeg, contrast,jpeg") == 0
    assert entries[0]["corruptions"] == ["jpeg", "contrast"]
    capsys.readouterr()
    assert _eval("probes", "--dataset", str(tmp_path), "--corruptions", ",") != 0
    assert "--corruptions" in capsys.readouterr().err and len(entries) == 1


def test_eval_probes_refuse_robustness_settings_without_a_dataset(entries, capsys):
    """--severities without --dataset did nothing (only the relation swap runs): refused, naming the flags."""
    assert _eval("probes", "--severities", "1") != 0
    assert "--dataset" in capsys.readouterr().err and entries == []


def test_eval_refuses_an_out_inside_an_imagefolder_dataset(entries, tmp_path, capsys):
    """--out inside the --dataset tree became a class of the next run (its confusion PNG an image): refused
    before any work."""
    for c in ("cat", "dog"):
        _png(tmp_path / "data" / c / "0.png")
    assert _eval("zeroshot", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "data" / "res")) != 0
    assert "--dataset" in capsys.readouterr().err and entries == []
    assert not (tmp_path / "data" / "res").exists()


# ============================================================================ kizuna analyze: what reaches the reports
class _Target:
    kind = "clip"
    extra: dict = {}

    @staticmethod
    def preprocess(image):
        return torch.zeros(3, 4, 4)


@pytest.fixture
def reports(monkeypatch):
    """The analysis functions replaced by recorders: {name: (args, kwargs)} of each call."""
    from kizuna.analysis import over_training, report as R, runs

    seen = {}

    def recorder(name, result):
        def f(*args, **kw):
            seen[name] = (args, kw)
            return result(*args, **kw) if callable(result) else result
        return f

    monkeypatch.setattr(R, "load_target", recorder("load_target", _Target()))
    monkeypatch.setattr(R, "check_report", recorder("check_report", None))
    monkeypatch.setattr(R, "filters_report", recorder("filters", {"explained": 1.0}))
    monkeypatch.setattr(R, "rollout_report", recorder("rollout", {"rollout": 1.0}))
    monkeypatch.setattr(R, "predict_report", recorder("predict", {"top": 1.0}))
    monkeypatch.setattr(R, "load_images", recorder("load_images", (torch.zeros(1, 3, 4, 4), ["x"])))
    monkeypatch.setattr(R, "attention_distance_report", recorder("attention_distance", {"mean": 1.0}))
    monkeypatch.setattr(over_training, "over_training_report", recorder(
        "over_training", lambda *a, **k: {"metric": a[5], "checkpoints": [], "uniform_reference": 1.0}))
    monkeypatch.setattr(runs, "compare_runs", recorder("compare_runs", {"differing_settings": []}))
    monkeypatch.setattr(runs, "format_table", lambda numbers: "")
    return seen


def _analyze(*argv) -> int:
    return main(["analyze", *argv, *(["--threads", "1"] if argv[0] != "compare-runs" else [])])


def test_analyze_rollout_gets_the_fusion_and_discard_ratio_and_the_model_its_act(reports, tmp_path):
    """--head-fusion defaults to mean (the help); --discard-ratio reached the rollout (a constant 0 in its
    place drew the undropped map); --act reached load_target (dropped, a GELU file ran as QuickGELU)."""
    _png(tmp_path / "a.png")
    assert _analyze("rollout", "m", "--image", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")) == 0
    args, _ = reports["rollout"]
    assert (args[3], args[4]) == ("mean", 0.0)
    assert _analyze("rollout", "m", "--image", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                    "--head-fusion", "max", "--discard-ratio", "0.25", "--act", "gelu") == 0
    args, _ = reports["rollout"]
    assert (args[3], args[4]) == ("max", 0.25)
    assert reports["load_target"][1]["act"] == "gelu"


def test_analyze_discard_ratio_of_one_is_refused_when_parsed(capsys):
    """_discard_ratio: 1 drops all of the attention; refused by argparse, before any figure."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["analyze", "rollout", "m", "--image", "a.png", "--discard-ratio", "1"])
    assert "argument --discard-ratio" in capsys.readouterr().err


def test_analyze_predict_gets_labels_true_label_and_top(reports, tmp_path):
    """--true-label reached the panel (dropped, nothing was highlighted) and --top defaults to 5."""
    _png(tmp_path / "a.png")
    common = ["predict", "m", "--image", str(tmp_path / "a.png"), "--labels", "cat, dog,car", "--out", str(tmp_path)]
    assert _analyze(*common) == 0
    args, _ = reports["predict"]
    assert (args[3], args[5], args[6]) == (["cat", "dog", "car"], None, 5)
    assert _analyze(*common, "--true-label", "dog", "--top", "2") == 0
    args, _ = reports["predict"]
    assert (args[5], args[6]) == ("dog", 2)


def test_analyze_filters_and_attention_distance_defaults(reports, tmp_path):
    """--components defaults to 28 (ViT Fig. 7) and --max-images to 32, as their help says."""
    assert _analyze("filters", "m", "--out", str(tmp_path / "o")) == 0
    assert reports["filters"][0][2] == 28
    (tmp_path / "imgs").mkdir()  # (checked to be there before the model loads)
    assert _analyze("attention-distance", "m", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"),
                    "--no-progress") == 0
    assert reports["load_images"][0][2] == 32
    assert _analyze("attention-distance", "m", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"),
                    "--no-progress", "--max-images", "3") == 0
    assert reports["load_images"][0][2] == 3


def test_analyze_over_training_passes_its_metric(reports, tmp_path, capsys):
    """--metric reached over_training_report (a CLIP run saves zeroshot/top1; val_top1 in its place drew n/a)."""
    (tmp_path / "imgs").mkdir()  # (checked to be there before the model loads)
    assert _analyze("over-training", str(tmp_path / "run"), "--images", str(tmp_path / "imgs"), "--out",
                    str(tmp_path / "o"), "--no-progress", "--metric", "zeroshot/top1", "--max-images", "4") == 0
    args, kw = reports["over_training"]
    assert (args[0], args[3], args[5]) == (str(tmp_path / "run"), 4, "zeroshot/top1")
    assert list(args[1]) == [str(tmp_path / "imgs")] and kw["progress"] is False


def test_analyze_compare_runs_passes_each_setting_to_its_own_parameter(reports, tmp_path):
    """--panel-by and --colour-by were swapped, --mode dropped (auto in its place), --group-by's default ""
    became one empty setting, and --train-window defaults to 5 (the help)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert _analyze("compare-runs", a, b, "--out", str(tmp_path / "o"), "--panel-by", "subset_fraction",
                    "--colour-by", "model", "--mode", "min", "--metric", "val_loss") == 0
    args, kw = reports["compare_runs"]
    assert list(args[0]) == [a, b] and args[2] == "val_loss"
    assert (args[4], kw["colour_by"], kw["mode"]) == ("subset_fraction", "model", "min")
    assert list(args[5]) == [] and args[6] == 5
    assert _analyze("compare-runs", a, b, "--out", str(tmp_path / "o"), "--group-by", " model, seed ,") == 0
    assert list(reports["compare_runs"][0][5]) == ["model", "seed"]


def test_analyze_all_warns_only_when_the_prediction_flags_go_unused(reports, monkeypatch, tmp_path, capsys):
    """`analyze all --labels ...` on a model with no prediction panel says the flags were ignored, and only
    then (the condition inverted warned when the panel was drawn and stayed silent when it was not)."""
    from kizuna.analysis import report as R

    base = {"figures": [], "positions": {"row_column_ratio": 1.0}, "attention_distance": {"per_layer_mean": [1.0]}}
    for with_panel in (False, True):
        numbers = {**base, **({"predict": {"top": 1}} if with_panel else {})}
        monkeypatch.setattr(R, "full_report", lambda *a, _n=numbers, **k: _n)
        capsys.readouterr()
        assert _analyze("all", "m", "--labels", "cat,dog", "--out", str(tmp_path / "o")) == 0
        err = capsys.readouterr().err
        assert ("--labels ignored" in err) is (not with_panel), (with_panel, err)


def test_analyze_refuses_an_out_inside_the_images_folder(reports, tmp_path, capsys):
    """The PNGs written into an --out inside --images were read as images by the next run: refused first."""
    _png(tmp_path / "imgs" / "a.png")
    assert _analyze("attention-distance", "m", "--images", str(tmp_path / "imgs"), "--out",
                    str(tmp_path / "imgs" / "fig"), "--no-progress") != 0
    assert "--images" in capsys.readouterr().err and "load_target" not in reports


# ============================================================================ kizuna vit: settings, eval, augment
def _vit_config(*argv):
    from kizuna.train.vit_cli import config_from_args

    return config_from_args(build_parser().parse_args(["vit", *argv]))


def test_vit_finetune_defaults_are_the_papers_recipe_and_a_config_file_overrides_them(tmp_path):
    """FINETUNE_DEFAULTS (the module doc: SGD, lr 0.01, no weight decay, 100 warm-up steps, no RandAugment or
    mixing) are the fine-tune's base; they were lost (`vit train`'s AdamW settings) or changed, and a --config
    file's values sit on top of them, under the flags."""
    from kizuna.train.supervised import SupervisedConfig

    cfg = _vit_config("finetune", "ckpt")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.epochs) == ("sgd", 0.01, 0.0, 100, 10.0)
    assert (cfg.randaug_ops, cfg.mixup, cfg.cutmix, cfg.label_smoothing) == (0, 0.0, 0.0, 0.0)
    assert (cfg.image_size, cfg.out, cfg.init) == (0, "runs/vit-finetune", "ckpt")
    assert SupervisedConfig().optimizer != "sgd" or SupervisedConfig().lr != 0.01  # the defaults differ from train's
    conf = tmp_path / "ft.py"
    conf.write_text("def get_config():\n    return {'lr': 0.05, 'warmup_steps': 7}\n")
    cfg = _vit_config("finetune", "ckpt", "--config", str(conf), "--warmup-steps", "3")
    assert (cfg.lr, cfg.warmup_steps, cfg.optimizer) == (0.05, 3, "sgd")


def test_vit_finetune_no_pos_interp_is_the_sequence_table_and_contradicting_it_is_refused():
    """--no-pos-interp = --pos-embed sequence (the ablation); it set "interpolate", and --pos-embed interpolate
    beside it was accepted silently."""
    at_48 = ("--image-size", "48")  # (without a new size the table is kept, and either flag is refused)
    assert _vit_config("finetune", "ckpt", "--no-pos-interp", *at_48).pos_embed == "sequence"
    assert _vit_config("finetune", "ckpt", "--no-pos-interp", "--pos-embed", "sequence", *at_48).pos_embed == "sequence"
    assert _vit_config("finetune", "ckpt", *at_48).pos_embed != "sequence"
    with pytest.raises(ValueError, match="--no-pos-interp contradicts --pos-embed interpolate"):
        _vit_config("finetune", "ckpt", "--no-pos-interp", "--pos-embed", "interpolate", *at_48)
    with pytest.raises(ValueError, match="--no-pos-interp does nothing here"):
        _vit_config("finetune", "ckpt", "--no-pos-interp")


def test_vit_finetune_does_not_name_its_config_files_architecture(tmp_path):
    """named_fields: a fine-tune drops its --config file's model and model_overrides (the checkpoint decides the
    architecture), so they are not "asked for": named, a resume refused the file's model as another one."""
    from kizuna.train.vit_cli import named_fields

    conf = tmp_path / "c.py"
    conf.write_text("def get_config():\n    return {'model': 'S/16', 'model_overrides': {'depth': 2}, 'lr': 0.05}\n")
    names = named_fields(build_parser().parse_args(["vit", "finetune", "ckpt", "--config", str(conf)]))
    assert {"init", "lr"} <= names and not {"model", "model_overrides"} & names
    names = named_fields(build_parser().parse_args(["vit", "train", "--config", str(conf)]))
    assert {"model", "model_overrides", "lr"} <= names  # a training run's file decides its model


CLASSES = ["red", "green", "blue", "grey"]
COLOURS = [(200, 40, 40), (40, 190, 40), (40, 40, 200), (128, 128, 128)]
TINY = {"width": 32, "mlp_dim": 64, "depth": 2, "heads": 2}


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """A 16-px ViT saved with its class names and preprocessing (as `vit train` saves it) and a dataset root
    whose test/ split is an ImageFolder tree of 3 images per class."""
    from kizuna.train.supervised import vit_preprocess

    root = tmp_path_factory.mktemp("vit_eval")
    torch.manual_seed(0)
    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=4, **TINY)
    torch.nn.init.normal_(vit.head.weight)
    kizuna.save_model(vit, root / "model", extra={"classnames": CLASSES, "preprocess": vit_preprocess(16)})
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        for i in range(3):
            arr = np.clip(np.array(COLOURS[label])[None, None] + rng.normal(0, 30, (16, 16, 3)), 0, 255)
            (root / "data" / "test" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(root / "data" / "test" / name / f"{i}.png")
    return root


def _reference(model_dir, data, image_size, max_samples=0):
    from kizuna.data.transforms import Preprocess
    from kizuna.eval.classification import evaluate_classifier
    from kizuna.eval.datasets import load_dataset
    from kizuna.train.supervised import vit_preprocess

    model = kizuna.load_model(model_dir, image_size=image_size).eval()
    ds = load_dataset(data, task="classification", classnames=CLASSES, max_samples=max_samples)
    return evaluate_classifier(model, ds, transform=Preprocess(**vit_preprocess(image_size)), progress=False)


def test_vit_eval_at_another_size_resizes_by_the_stored_preprocessing_to_that_size(vit_run, tmp_path):
    """A model saved with its preprocessing evaluated at --image-size 32 must get 32-px inputs: the stored
    16 px was kept (the 32-px model then got 16-px images) -- checked against the classifier run here."""
    out = tmp_path / "ev"
    assert main(["vit", "eval", str(vit_run / "model"), "--data", str(vit_run / "data"), "--image-size", "32",
                 "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    ref = _reference(vit_run / "model", vit_run / "data" / "test", 32)
    assert (res["image_size"], res["n"], res["split"]) == (32, 12, "test")
    assert res["metrics"]["loss"] == pytest.approx(ref.metrics["loss"], rel=1e-5)
    assert (out / "results.md").is_file() and (out / "confusion.png").stat().st_size > 1000


def test_vit_eval_max_samples_reaches_the_dataset(vit_run, tmp_path):
    """--max-samples 5 evaluated every image (a constant 0 in its place)."""
    out = tmp_path / "ev"
    assert main(["vit", "eval", str(vit_run / "model"), "--data", str(vit_run / "data" / "test"), "--max-samples",
                 "5", "--no-progress", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    ref = _reference(vit_run / "model", vit_run / "data" / "test", 16, max_samples=5)
    assert res["n"] == 5
    assert res["metrics"]["loss"] == pytest.approx(ref.metrics["loss"], rel=1e-5)


@pytest.fixture
def previews(monkeypatch):
    from kizuna.analysis import augmentation

    seen = []

    def record(cfg, out, images, draws, stats_images, seed=0):
        seen.append(dict(cfg=cfg, out=out, images=images, draws=draws, stats=stats_images, seed=seed))
        return {"original": None, "loader": None, "device": None, "figure": f"{out}/augment.png"}

    monkeypatch.setattr(augmentation, "preview_augmentation", record)
    return seen


def test_vit_augment_passes_each_count_to_its_own_parameter(previews, tmp_path):
    """--num-images and --draws were swapped on their way to preview_augmentation; --out defaults to
    runs/augment (not the training run's folder); no --data is refused, naming it."""
    assert main(["vit", "augment", "--data", str(tmp_path), "--num-images", "3", "--draws", "5",
                 "--stats-images", "7", "--seed", "4", "--threads", "1"]) == 0
    (p,) = previews
    assert (p["images"], p["draws"], p["stats"], p["seed"], p["out"]) == (3, 5, 7, 4, "runs/augment")
    assert main(["vit", "augment", "--threads", "1"]) != 0 and len(previews) == 1


# ============================================================================ print-config and the final summary
@pytest.fixture
def resumed(monkeypatch):
    """resumed_config replaced: the checkpoint's settings are the command line's with another lr and folder."""
    import dataclasses

    from kizuna.train import checkpointing

    seen = {}

    def fake(cfg, named):
        seen["named"] = named
        return dataclasses.replace(cfg, lr=0.123, out="/the/checkpoints/run"), []

    monkeypatch.setattr(checkpointing, "resumed_config", fake)
    return seen


@pytest.mark.parametrize("argv", [["train"], ["vit", "train"]])
def test_print_config_prints_the_settings_a_resume_would_run(resumed, argv, capsys, tmp_path):
    """--print-config printed the command line's settings, not the resumed run's (the checkpoint's)."""
    assert main([*argv, "--out", str(tmp_path), "--resume", "latest", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["lr"] == 0.123 and printed["out"] == "/the/checkpoints/run"


@pytest.mark.parametrize("argv, module, function", [(["train"], "contrastive", "train"),
                                                    (["vit", "train"], "supervised", "train_supervised")])
def test_training_gets_the_named_flags_and_the_summary_names_the_resumed_folder(resumed, monkeypatch, capsys,
                                                                                  tmp_path, argv, module, function):
    """The trainer is given the flags the command line names (without them a resume took every default as
    asked for); stdout is the final metrics as strict JSON (NaN as null) and stderr names the checkpoint's own
    run folder, where a resume by path goes on."""
    import importlib

    seen = {}

    def fake_train(cfg, named=None):
        seen.update(cfg=cfg, named=named)
        return {"val_top1": float("nan"), "steps": 3}

    monkeypatch.setattr(importlib.import_module(f"kizuna.train.{module}"), function, fake_train)
    # (the fake trainer writes no checkpoint, which the summary would otherwise say instead of the folder)
    monkeypatch.setattr(importlib.import_module("kizuna.train.checkpointing"), "nothing_written", lambda *a: None)
    assert main([*argv, "--out", str(tmp_path), "--resume", "latest", "--lr", "0.5"]) == 0
    captured = capsys.readouterr()
    assert seen["named"] is not None and {"lr", "resume", "out"} <= set(seen["named"])
    assert json.loads(captured.out) == {"val_top1": None, "steps": 3}
    assert "/the/checkpoints/run/checkpoints/latest" in captured.err


# ============================================================================ training's synthetic probes
@pytest.fixture(scope="module")
def mu():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = kizuna.create_model("ViT-mu-8").eval()
    return model, kizuna.get_tokenizer(model)


def test_synthetic_probe_metrics_encode_each_image_and_text_in_its_own_row(mu, monkeypatch):
    """The batched encoders handed to evaluate_probes keep each image and text in its row (a batch reversed
    scored every image against another's candidates): their rows equal encodings made here one at a time, and
    the probes' numbers come back under "probe/" names."""
    from kizuna.train import evaluation as E

    model, tok = mu
    seen = {}

    def capture(probes, encode_images, encode_texts):
        seen.update(probes=probes, images=encode_images, texts=encode_texts)
        return {"colour": 0.25, "relation_swap/group_score": 0.5}

    monkeypatch.setattr(E, "evaluate_probes", capture)
    assert E.synthetic_probe_metrics(model, tok, n_per_task=4, batch_size=3) == {
        "probe/colour": 0.25, "probe/relation_swap/group_score": 0.5}
    pre = kizuna.get_preprocess(model)
    images = [im for p in seen["probes"].values() for im in p.images][:7]
    texts = [f"a photo of a {c} thing" for c in ("red", "green", "blue", "big", "small", "round", "tall")]
    with torch.no_grad():
        ref_i = torch.cat([model.encode_image(pre(im)[None], normalize=True).float() for im in images])
        ref_t = torch.cat([model.encode_text(tok([t]), normalize=True).float() for t in texts])
    torch.testing.assert_close(seen["images"](images), ref_i, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(seen["texts"](texts), ref_t, atol=1e-5, rtol=1e-4)


def test_a_model_giving_nan_gives_nan_probes_under_the_same_names_with_a_warning(mu, monkeypatch):
    """A diverged model's NaN features: every probe NaN (not 0, not a number argmax made of NaN), named as a
    finite model's probes are, and a warning."""
    from kizuna.train.evaluation import synthetic_probe_metrics

    model, tok = mu
    names = set(synthetic_probe_metrics(model, tok, n_per_task=4))
    real = model.encode_image

    monkeypatch.setattr(model, "encode_image", lambda x, normalize=True: real(x, normalize=normalize) * float("nan"))
    with pytest.warns(UserWarning):
        got = synthetic_probe_metrics(model, tok, n_per_task=4)
    assert set(got) == names and all(math.isnan(v) for v in got.values())


def test_vit_eval_ends_the_process_group_as_the_other_eval_commands_do(monkeypatch):
    """`kizuna vit eval` under torchrun left the process group to the interpreter's exit (gloo may abort in its
    teardown: finish_distributed's docstring); `kizuna eval` and the trainers take it down after rank 0 wrote."""
    import argparse

    from kizuna.train import distributed, vit_cli

    calls = []
    monkeypatch.setattr(vit_cli, "evaluate", lambda args: calls.append("evaluate") or 0)
    monkeypatch.setattr(distributed, "finish_distributed", lambda: calls.append("finish"))
    assert vit_cli.run(argparse.Namespace(vit_command="eval")) == 0
    assert calls == ["evaluate", "finish"]
