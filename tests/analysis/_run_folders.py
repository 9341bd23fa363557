"""A run folder of two logged steps and a train_config.json, for compare-runs tests."""
import json


def _run(folder, accuracy, config):
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for step in (1, 2):
            f.write(json.dumps({"kind": "train", "step": step, "time": 1.0 * step, "train_top1": accuracy}) + "\n")
            f.write(json.dumps({"kind": "eval", "step": step, "time": 1.0 * step, "val_top1": accuracy}) + "\n")
    (folder / "train_config.json").write_text(json.dumps({"model": "mu/4", **config}))
    return folder
