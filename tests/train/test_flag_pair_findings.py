"""Flags that another flag makes unused, a time limit under the budget, and a head kept that is not there: each
was accepted, written to train_config.json and silently did something else (flag x flag hunt, stop 42)."""
import sys
import warnings
from pathlib import Path

import pytest
import torch

import kizuna
from kizuna.apps.cli import build_parser
from kizuna.train.config import config_from_args, make_config
from kizuna.train.supervised import load_for_finetune
from kizuna.train.vit_cli import config_from_args as vit_config_from_args


def _train_cfg(*argv):
    return config_from_args(build_parser().parse_args(["train", "--out", "/tmp/unused-run", *argv]))


def _vit_cfg(*argv):
    return vit_config_from_args(build_parser().parse_args(["vit", "train", "--data", "/tmp/unused-data",
                                                           "--out", "/tmp/unused-run", *argv]))


@pytest.mark.parametrize("argv, flag", [
    (("--data", "shards/{0..3}.tar", "--synthetic-length", "77"), "--synthetic-length 77"),
    (("--data", "shards/{0..3}.tar", "--synthetic-image-size", "48"), "--synthetic-image-size 48"),
    (("--data", "shards/{0..3}.tar", "--synthetic-hard-negatives", "true"), "--synthetic-hard-negatives True"),
    (("--data", "shards/{0..3}.tar", "--csv-image-key", "path"), "--csv-image-key path"),
    (("--best-mode", "max",), "--best-mode max"),
    (("--eval-split", "val",), "--eval-split val"),
    (("--eval-zeroshot", "synthetic", "--eval-split", "val",), "--eval-split val"),  # the probes have no splits
    (("--data", "pairs.csv", "--eval-max-samples", "5"), "--eval-max-samples 5"),
])
def test_train_refuses_a_flag_another_setting_makes_unused(argv, flag):
    with pytest.raises(ValueError, match=f"{flag} does nothing here: .*; drop it"):
        _train_cfg(*argv)


def test_train_takes_the_same_flags_where_they_are_read():
    assert _train_cfg("--synthetic-length", "77").synthetic_length == 77
    assert _train_cfg("--data", "pairs.csv", "--csv-image-key", "path").csv_image_key == "path"
    assert _train_cfg("--best-metric", "loss", "--best-mode", "min").best_mode == "min"
    assert _train_cfg("--eval-retrieval", "/tmp/unused-flickr", "--eval-split", "val").eval_split == "val"
    # at its default the flag says nothing wrong, and on a resume the run's own settings are not known yet
    assert _train_cfg("--data", "shards/{0..3}.tar", "--synthetic-length", "200000").synthetic_length == 200_000
    assert _train_cfg("--resume", "latest", "--best-mode", "max").best_mode == "max"


@pytest.mark.parametrize("argv, flag", [
    (("--optimizer", "sgd", "--betas", "0.5,0.6"), "--betas 0.5,0.6"),
    (("--optimizer", "sgd", "--eps", "0.1"), "--eps 0.1"),
    (("--momentum", "0.1",), "--momentum 0.1"),
    (("--crop", "pad", "--crop-scale", "0.5,1"), "--crop-scale 0.5,1"),
    (("--crop", "rrc", "--crop-padding", "9"), "--crop-padding 9"),
    (("--mix-prob", "0.3",), "--mix-prob 0.3"),
    (("--randaug-magnitude", "3",), "--randaug-magnitude 3"),
    (("--eval-every", "5",), "--eval-every 5"),
    (("--val-split", "val",), "--val-split val"),
    (("--val-max-samples", "3",), "--val-max-samples 3"),
    (("--label-column", "y",), "--label-column y"),
    (("--image-column", "y",), "--image-column y"),
    (("--subset-seed", "4",), "--subset-seed 4"),
])
def test_vit_refuses_a_flag_another_setting_makes_unused(argv, flag):
    with pytest.raises(ValueError, match=f"{flag} does nothing here"):
        _vit_cfg(*argv)


def test_vit_takes_the_same_flags_where_they_are_read():
    assert _vit_cfg("--optimizer", "sgd", "--momentum", "0.5").momentum == 0.5
    assert tuple(_vit_cfg("--crop", "rrc", "--crop-scale", "0.5,1").crop_scale) == (0.5, 1.0)
    assert _vit_cfg("--mixup", "0.8", "--mix-prob", "0.3").mix_prob == 0.3
    assert _vit_cfg("--randaug-ops", "2", "--randaug-magnitude", "3").randaug_magnitude == 3
    assert _vit_cfg("--val-data", "/tmp/unused-val", "--eval-every", "5").eval_every == 5
    assert _vit_cfg("--val-data", "/tmp/unused-val", "--val-split", "val", "--val-max-samples", "3").val_split == "val"
    assert _vit_cfg("--val-data", "/tmp/val.csv", "--label-column", "y").label_column == "y"  # a CSV either side
    assert _vit_cfg("--subset-fraction", "0.5", "--subset-seed", "4").subset_seed == 4
    # a recipe's value for another choice of its own flags is left alone: vit_cifar10 evaluates every 400 steps
    assert _vit_cfg("--config", "vit_cifar10", "--val-data", "").eval_every == 400


def test_a_time_limit_under_the_budget_is_warned_about():
    """`--config flickr8k --time-budget-minutes 60` planned 60 minutes and was cut by the config's 29.5-minute
    limit part-way through the cosine, with no word at the start."""
    with pytest.warns(UserWarning, match="--time-limit-minutes 0.15 is shorter than --time-budget-minutes 0.5"):
        make_config(time_budget_minutes=0.5, time_limit_minutes=0.15, out="/tmp/unused-run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_config(time_budget_minutes=0.5, time_limit_minutes=0.6, out="/tmp/unused-run")
        make_config(time_budget_minutes=0.5, out="/tmp/unused-run")  # no limit
        make_config(time_limit_minutes=0.2, out="/tmp/unused-run")  # no budget


def test_keeping_a_head_that_is_not_there_is_refused(tmp_path):
    """A CLIP tower (no head) or a head for other classes without stored class names, fine-tuned with
    --reset-head false, trained a new zero head while train_config.json said the head was kept."""
    clip = kizuna.create_model("ViT-mu-8")
    kizuna.save_model(clip, tmp_path / "clip")
    with pytest.raises(ValueError, match=r"has no classifier head .*\(--reset-head true\)"):
        load_for_finetune(str(tmp_path / "clip"), num_classes=2, reset_head=False)
    vit = kizuna.models.vit.VisionTransformer(kizuna.models.vit.VisionConfig(
        image_size=16, patch_size=8, width=32, depth=1, heads=2, mlp_dim=64, num_classes=3))
    kizuna.save_model(vit, tmp_path / "vit3")
    with pytest.raises(ValueError, match="has a head for 3 classes and the data has 2 classes"):
        load_for_finetune(str(tmp_path / "vit3"), num_classes=2, reset_head=False)
    kept = load_for_finetune(str(tmp_path / "vit3"), num_classes=3, reset_head=False)
    assert torch.equal(kept.head.weight, vit.head.weight)
    assert load_for_finetune(str(tmp_path / "clip"), num_classes=2).head.weight.shape[0] == 2


# ------------------------------------------------------------------------------------------------
# Seeds (determinism hunt, stop 42)

def test_two_runs_of_one_seed_write_the_same_python_and_numpy_generator_states(tmp_path):
    """Only torch was seeded: train_state.pt saved whatever state Python's and numpy's global generators had, so
    two runs of one seed wrote different files around bit-identical weights."""
    import random

    import numpy as np

    from kizuna.train.checkpointing import read_train_state
    from kizuna.train.contrastive import ContrastiveTrainer

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny import tiny_config

    states = []
    for run, noise in (("a", 1), ("b", 2)):
        random.seed(noise)
        np.random.seed(noise)
        caller = (random.getstate(), np.random.get_state()[1].copy())
        ContrastiveTrainer(tiny_config(tmp_path / run, steps=1, eval_every=0, warmup_steps=0)).train()
        assert random.getstate() == caller[0] and np.array_equal(np.random.get_state()[1], caller[1])  # handed back
        states.append(read_train_state(tmp_path / run / "checkpoints" / "step_0000001")["rng"])
    assert states[0]["python"] == states[1]["python"]
    assert torch.equal(states[0]["numpy"]["keys"], states[1]["numpy"]["keys"])


@pytest.mark.parametrize("argv", [("--seed", str(2**64)), ("--seed", str(-2**63 - 1))])
def test_a_seed_out_of_torchs_range_is_refused_naming_the_flag(argv):
    with pytest.raises(ValueError, match="--seed must be a whole number from -2\\*\\*63 to 2\\*\\*64 - 1"):
        _train_cfg(*argv)
    with pytest.raises(ValueError, match="--seed must be"):
        _vit_cfg(*argv)


def test_a_negative_subset_seed_draws_a_subset_as_a_negative_seed_does():
    import numpy as np

    from kizuna.train.supervised import stratified_subset

    labels = np.repeat(np.arange(3), 10)
    rows = stratified_subset(labels, 0.5, seed=-1)  # numpy's "expected non-negative integer"
    assert np.array_equal(rows, stratified_subset(labels, 0.5, seed=2**64 - 1)) and len(rows) == 15
    with pytest.raises(ValueError, match="--subset-seed must be a whole number"):
        _vit_cfg("--subset-fraction", "0.5", "--subset-seed", str(2**64))


@pytest.mark.parametrize("argv, message", [
    (("--precision", "fp8"), "--precision must be auto, fp32 or bf16, got 'fp8'"),
    (("--device", "foo"), "--device must be auto, cpu, cuda or cuda:N, got 'foo'"),
    (("--time-limit-minutes", "-1"), "--time-limit-minutes must be >= 0"),
    (("--time-budget-minutes", "-1"), "--time-budget-minutes must be >= 0"),
])
def test_print_config_refuses_what_the_run_refuses(argv, message, capsys):
    """`--print-config` printed these and exited 0; the run itself then refused them with exit 2."""
    from kizuna.apps.cli import main

    for command in (["train", "--out", "/tmp/unused-run"], ["vit", "train", "--data", "/tmp/unused-data"]):
        assert main([*command, *argv, "--print-config"]) == 2
        assert message in capsys.readouterr().err
    assert _train_cfg("--device", "cuda:1").device == "cuda:1"  # a GPU machine's config, printed anywhere


def test_python_callers_pass_numpy_seeds_and_torch_devices(tmp_path):
    """The new range checks refused np.int64(3) (as "not a whole number") and torch.device("cpu") / None, which
    trained before (the ViT trainer's mixing generator overflowed on a numpy seed even then)."""
    import numpy as np

    from kizuna.train.contrastive import ContrastiveTrainer
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny import tiny_config
    from test_diverged_eval import _tree

    assert make_config(seed=np.int64(3), device=torch.device("cpu"), out="/tmp/unused-run").seed == 3
    assert make_config(device=None, out="/tmp/unused-run").device is None
    tr = ContrastiveTrainer(tiny_config(tmp_path / "clip", steps=1, seed=np.int64(3), warmup_steps=0))
    tr.train()
    assert type(tr.cfg.seed) is int
    cfg = make_supervised_config(
        model="mu/4", model_overrides={"width": 32, "mlp_dim": 64, "depth": 1, "heads": 2}, image_size=16,
        data=_tree(tmp_path / "train", [4, 4]), batch_size=8, steps=1, workers=0, warmup_steps=0, lr=1e-3,
        out=str(tmp_path / "vit"), progress=False, threads=1, seed=np.int64(5), mixup=0.8,
        device=torch.device("cpu"))
    SupervisedTrainer(cfg).train()


def test_a_resume_refuses_a_flag_its_runs_settings_leave_unused(tmp_path, capsys):
    """--resume skipped the check (the run's settings were not known yet): `--momentum 0.5` on an AdamW run was
    recorded in train_config.json and never read."""
    from kizuna.apps.cli import main

    sys.path.insert(0, str(Path(__file__).parent))
    from test_diverged_eval import _tree

    data = _tree(tmp_path / "train", [4, 4])
    run = ["vit", "train", "--model", "mu/4", "--model-overrides", '{"width": 32, "depth": 1, "heads": 2, '
           '"mlp_dim": 64}', "--image-size", "16", "--data", data, "--batch-size", "8", "--steps", "2",
           "--workers", "0", "--threads", "1", "--progress", "false", "--out", str(tmp_path / "run")]
    assert main(run) == 0
    capsys.readouterr()
    again = ["vit", "train", "--out", str(tmp_path / "run"), "--resume", "latest", "--steps", "3"]
    assert main([*again, "--momentum", "0.5", "--print-config"]) == 2
    assert "--momentum 0.5 does nothing here: SGD's" in capsys.readouterr().err
    assert main([*again, "--print-config"]) == 0


def test_a_resume_with_the_runs_own_config_file_is_not_refused_for_the_files_values(tmp_path, capsys):
    """The resume check counted the --config file's keys as typed: `--config cfg --randaug-ops 0` started, and the
    same line with --resume was refused for the file's randaug_magnitude ("drop it", never typed)."""
    import json

    from kizuna.apps.cli import main

    sys.path.insert(0, str(Path(__file__).parent))
    from test_diverged_eval import _tree

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"randaug_ops": 2, "randaug_magnitude": 5}))
    run = ["vit", "train", "--config", str(config), "--randaug-ops", "0", "--model", "mu/4", "--model-overrides",
           '{"width": 32, "depth": 1, "heads": 2, "mlp_dim": 64}', "--image-size", "16",
           "--data", _tree(tmp_path / "train", [4, 4]), "--batch-size", "8", "--steps", "2", "--workers", "0",
           "--threads", "1", "--progress", "false", "--out", str(tmp_path / "run")]
    assert main(run) == 0
    capsys.readouterr()
    assert main([*run, "--resume", "latest", "--steps", "3", "--print-config"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("command, message", [
    (["train", "--model", "bogus"], "unknown model 'bogus'"),
    (["train", "--model", "ViT-B-23"], r"unknown model 'ViT-B-23' \(did you mean ViT-B-32"),
    (["train", "--batch-size", "10", "--accum-steps", "3"], "--batch-size 10 must be divisible by --accum-steps 3"),
    (["vit", "train", "--data", "/tmp/unused-data", "--model", "bogus/3"], "--model bogus/3: not a ViT variant"),
    (["vit", "train", "--data", "/tmp/unused-data", "--model", "hybrid-x/3"], "--model hybrid-x/3: not a ViT variant"),
    (["vit", "train", "--data", "/tmp/unused-data", "--model", "S/0"], "--model S/0: not a ViT variant"),
])
def test_print_config_refuses_a_model_and_a_batch_the_run_refuses(command, message, capsys):
    """These were refused only once the run started (the model built, the data indexed): `--print-config` printed
    them and exited 0."""
    from kizuna.apps.cli import main

    assert main([*command, "--out", "/tmp/unused-run", "--print-config"]) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert main(["vit", "train", "--data", "/tmp/unused-data", "--model", "hybrid-S/1", "--print-config"]) == 0


def test_each_eval_task_takes_the_csv_column_it_reads():
    """`eval retrieval --label-column` and `eval zeroshot --caption-column` were accepted and did nothing."""
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "retrieval", "--model", "m", "--dataset", "d", "--label-column", "y"])
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "zeroshot", "--model", "m", "--dataset", "d", "--caption-column", "y"])
    from kizuna.eval.cli import _entry

    args = parser.parse_args(["eval", "retrieval", "--model", "m", "--dataset", "d", "--caption-column", "cap"])
    assert (_entry(args, ["zeroshot_retrieval"])["caption_column"], _entry(args, ["x"])["label_column"]) == ("cap", "label")


def test_a_glob_that_matches_csv_files_takes_the_csv_column_flags(tmp_path):
    """`--data 'dir/part*'` reads part1.csv as a CSV, but the column flags it then asked for were refused as unused
    (the CSV test was on the spelling: no ".csv" in it)."""
    (tmp_path / "part1.csv").write_text("path,text\nimg0.jpg,a cat\n")
    cfg = _train_cfg("--data", f"{tmp_path}/part*", "--image-column", "path", "--caption-column", "text")
    assert (cfg.csv_image_key, cfg.csv_caption_key) == ("path", "text")
    with pytest.raises(ValueError, match="--csv-image-key path does nothing here"):  # shards: still refused
        _train_cfg("--data", f"{tmp_path}/nothing*", "--image-column", "path")


def test_advice_to_set_an_override_keeps_the_runs_other_overrides():
    """`--act` on a preset advised `--model-overrides '{"vision": {"act": ...}, ...}'`: a second --model-overrides
    replaces the first, so following it trained the full-depth model instead of the depth-1 one asked for."""
    from kizuna.train.config import overrides_flag

    assert overrides_flag({"vision": {"depth": 1}, "text": {"depth": 1}}, {"vision": {"act": "gelu"}}) == \
        """--model-overrides '{"vision": {"depth": 1, "act": "gelu"}, "text": {"depth": 1}}'"""
    with pytest.raises(ValueError, match="""sets it with --model-overrides '{"depth": 1, "act": "gelu"}' instead"""):
        _vit_cfg("--model-overrides", '{"depth": 1}', "--act", "gelu")


def test_a_csv_missing_columns_names_only_their_flags(tmp_path):
    """A `kizuna train` CSV without filepath/title advised "--image-column, --caption-column or --label-column":
    `kizuna train` has no --label-column, and following the advice failed as "unrecognized arguments"."""
    from kizuna.data.sources import build_index

    (tmp_path / "pairs.csv").write_text("path,text\nimg0.jpg,a cat\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['filepath', 'title'\].*with --image-column and "
                                         r"--caption-column\)$"):
        build_index(str(tmp_path / "pairs.csv"))


def test_a_non_square_size_on_synthetic_scenes_is_not_advised_as_a_side():
    """The advice was "give --synthetic-image-size [48, 40] instead", which the flag then refused."""
    with pytest.raises(ValueError, match="the scenes are square: give one side with --synthetic-image-size N"):
        _train_cfg("--data", "synthetic", "--model-overrides", '{"vision": {"image_size": [48, 40]}}')


def test_a_resume_checks_the_batch_against_accum_steps_with_the_runs_own_batch(tmp_path, capsys):
    """The new --print-config check read the default --batch-size 256 on a resume: `--resume latest --accum-steps 3`
    of a batch-6 run was refused ("--batch-size 256 must be divisible by --accum-steps 3"), while `--batch-size 8`
    on it printed and exited 0, and the run then refused it."""
    from kizuna.apps.cli import main
    from kizuna.train.checkpointing import CheckpointManager

    cfg = make_config(model="ViT-mu-8", data="synthetic", batch_size=6, accum_steps=3, steps=2, out=str(tmp_path))
    CheckpointManager(tmp_path).save(1, kizuna.create_model("ViT-mu-8"), {"step": 1, "train_config": cfg.to_dict()})
    again = ["train", "--out", str(tmp_path), "--resume", "latest", "--print-config"]
    assert main([*again, "--accum-steps", "3"]) == 0
    capsys.readouterr()
    assert main([*again, "--batch-size", "8"]) == 2
    assert "--batch-size 8 must be divisible by --accum-steps 3" in capsys.readouterr().err
    assert main([*again, "--accum-steps", "4"]) == 2  # the run's own batch of 6
    assert "the run's batch size 6 must be divisible by --accum-steps 4" in capsys.readouterr().err
