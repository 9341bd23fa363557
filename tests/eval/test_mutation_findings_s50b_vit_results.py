"""Mutation findings (session 50b): `kizuna vit eval --out`'s results.md heading shows the checkpoint's and the
dataset's names as text (a folder named __vit__ was shown bold, its underscores gone; $ opened GitHub's math)."""
from __future__ import annotations

from _evalhelpers import CLASSES, classification_wds

import kizuna
from kizuna.apps.cli import main
from kizuna.models.checkpoint import save_model


def test_vit_eval_results_heading_escapes_markup(tmp_path):
    data = classification_wds(tmp_path / "$d$", n=6)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=len(CLASSES), width=16, depth=1, heads=2, mlp_dim=32)
    save_model(model, tmp_path / "__vit__")
    out = tmp_path / "ev"
    assert main(["vit", "eval", str(tmp_path / "__vit__"), "--data", str(data), "--no-progress", "--threads", "1",
                 "--out", str(out)]) == 0
    heading = (out / "results.md").read_text().splitlines()[0]
    assert "/\\_\\_vit\\_\\_ on " in heading, heading
    assert "\\$d\\$" in heading and "$" not in heading.replace("\\$", ""), heading
