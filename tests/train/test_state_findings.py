"""State one run left to the next in one process (a notebook): the evaluation datasets a first run indexed, and the
torch thread count of a run refused while it was built."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.eval import training  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402


def test_evaluation_datasets_are_kept_by_the_caller_not_the_process(monkeypatch):
    """The datasets were cached for the life of the process: a second run (or call) scored against the first one's
    class names after classnames.txt had changed. Without a dict of its own a call loads them afresh; a trainer
    keeps one for its run."""
    loaded = []
    monkeypatch.setattr(training, "load_dataset", lambda path, **kw: loaded.append(path) or f"dataset of {path}")
    for _ in range(2):
        assert training._dataset("d", "classification", None, 0, None) == "dataset of d"
    assert loaded == ["d", "d"]
    kept: dict = {}
    for _ in range(2):
        training._dataset("e", "classification", None, 0, kept)
    assert loaded == ["d", "d", "e"]


def test_a_trainers_evaluations_share_one_dict_and_two_trainers_do_not(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(training, "evaluate_for_training", lambda *a, datasets=None, **k: seen.append(datasets) or {})
    monkeypatch.setattr("kizuna.train.contrastive.check_evaluation_data", lambda cfg, datasets: None)
    first = ContrastiveTrainer(tiny_config(tmp_path / "a", eval_zeroshot="somewhere"))
    first.evaluate()
    first.evaluate()
    ContrastiveTrainer(tiny_config(tmp_path / "b", eval_zeroshot="somewhere")).evaluate()
    assert seen[0] is seen[1] is first.eval_datasets and seen[2] is not seen[0]


def test_a_run_refused_while_it_is_built_puts_the_thread_count_back(tmp_path):
    """start() set --threads and only train() restored it: a refused run left a notebook on one thread."""
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    with pytest.raises(Exception):
        ContrastiveTrainer(tiny_config(tmp_path, threads=want, model=str(tmp_path / "no-such-checkpoint")))
    assert torch.get_num_threads() == before
