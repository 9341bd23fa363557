"""A report.json an older kizuna wrote, updated by one action of today's (session 53): its other sections, measured
as that version did (the rollout's discarded count before 4dc0235, say), stayed beside the new one unmarked."""
from __future__ import annotations

import json

import kizuna
from kizuna.apps.cli import main


def test_one_action_into_another_versions_report_removes_it(tmp_path):
    kizuna.save_model(kizuna.create_vit("mu/4", image_size=32, num_classes=3), tmp_path / "m")
    out = tmp_path / "an"
    assert main(["analyze", "all", str(tmp_path / "m"), "--out", str(out), "--no-progress"]) == 0
    written = json.loads((out / "report.json").read_text())
    assert "rollout" in written
    main(["analyze", "positions", str(tmp_path / "m"), "--out", str(out)])
    assert (out / "report.json").exists()  # this version's: the section replaced, the others kept
    del written["report_version"]  # as a version before the report's version was recorded wrote it
    (out / "report.json").write_text(json.dumps(written))
    assert main(["analyze", "positions", str(tmp_path / "m"), "--out", str(out)]) == 0
    assert not (out / "report.json").exists()
