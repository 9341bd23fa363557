"""Flags and numbers at their boundaries (session 52): equal zero-shot and few-shot accuracies, and
compare-runs' training window where checkpoints add records between --log-every ones."""
import json

import pytest

from kizuna.eval.linear_probe import ProbeResult, _matching_shots


def test_equal_zero_shot_and_few_shot_accuracies_are_said_to_match():
    few = {1: [0.1, 0.1, 0.1]}  # (their mean is 0.10000000000000002)
    eff = _matching_shots(few, 0.1)
    result = ProbeResult(metrics={"lp_acc1": 0.2, "zeroshot_acc1": 0.1, "zeroshot_matches_k_shot": eff}, l2=1.0,
                         sweep=[], few_shot=few, zeroshot_acc=0.1, num_classes=10, num_train=5, num_test=20)
    text = result.table()
    assert "below even" not in text and "zero-shot matches a 1.0-shot linear probe" in text
    assert _matching_shots({1: [0.3], 2: [0.5]}, 0.1 + 0.2) == 1.0  # (0.30000000000000004 is 0.3)


def test_compare_runs_window_counts_the_runs_log_every(tmp_path):
    from kizuna.analysis.runs import compare_runs

    run = tmp_path / "run"
    run.mkdir()
    records = [{"kind": "start", "step": 0, "time": 0.0}]
    # --log-every 4 with --save-every 6: records at 4, 6, 8, 12, 16, 18, 20, 24 (a median gap of 2)
    for step in (4, 6, 8, 12, 16, 18, 20, 24):
        records.append({"kind": "train", "step": step, "time": float(step), "train_top1": step / 100})
    records.append({"kind": "eval", "step": 24, "time": 25.0, "val_top1": 0.5})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "train_config.json").write_text(json.dumps({"log_every": 4, "steps": 24}))
    numbers = compare_runs([run], tmp_path / "out", train_window=5)
    r = numbers["runs"][0] if "runs" in numbers else numbers[0]
    # 5 x --log-every 4 = the last 20 steps, (4, 24]: each record weighted by the steps it covers
    want = (2 * 0.06 + 2 * 0.08 + 4 * 0.12 + 4 * 0.16 + 2 * 0.18 + 2 * 0.20 + 4 * 0.24) / 20
    assert r["final_train_top1"] == pytest.approx(want)


@pytest.mark.parametrize("flags, said", [
    (["--context-length", "2"], "--context-length must be 0 (the model's) or >= 3"),
    (["--synthetic-length", "0"], "--synthetic-length must be >= 1"),
    (["--batch-size", "1"], "--batch-size 1 with the CLIP (softmax) loss"),
    (["--batch-size", "1", "--model", "siglip-mu-8"], "--batch-size 1 with the SigLIP loss")])
def test_print_config_refuses_what_the_run_would(tmp_path, capsys, flags, said):
    """--print-config printed these and exited 0; the run refused them seconds later (a CI check of a config
    passed, the job failed), the synthetic length's error advising a lower --batch-size."""
    from kizuna.apps.cli import main

    assert main(["train", "--data", "synthetic", *flags, "--print-config", "--out", str(tmp_path / "x")]) == 2
    assert said in capsys.readouterr().err


def test_a_bpe_that_runs_out_of_merges_says_so(tmp_path, capsys):
    """--tokenizer-vocab-size 1000000 trained a 939-token BPE; train_config.json recorded 1000000, unsaid."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from _tiny import tiny_config
    from kizuna.train.contrastive import ContrastiveTrainer

    trainer = ContrastiveTrainer(tiny_config(tmp_path, tokenizer="train", tokenizer_vocab_size=100_000,
                                             synthetic_length=64))
    err = capsys.readouterr().err
    assert (f"the captions gave a BPE of {trainer.model.cfg.text.vocab_size} tokens, fewer than the 100000 asked "
            "for (it ran out of merges)") in err
