"""`python -m benchmarks --merge`'s test of a later section that must not replace ours silently (_lesser), which a
seventh mutation hunt found unchecked: a contender ours had dropped as well, a skip or smoke run on either side,
and sections without a machine record could each be taken for "fewer contenders" or "another machine" and the
later measurement kept out, with every test passing. Each test merges sections of the committed results in
memory (merge_results: no file written, no report rendered)."""
import copy
import json
from pathlib import Path

import pytest

import benchmarks.__main__ as bench_main

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results.json"
LATER = "2099-01-01 00:00:00 UTC"


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(RESULTS.read_text())["sections"]


def _merge(key: str, ours: dict, theirs: dict) -> tuple[list[str], dict, str]:
    """merge_results of one section: the keys taken, the section kept under ``key``, what the merge said."""
    results, lines = {"sections": {key: ours}}, []
    taken = bench_main.merge_results(results, {"sections": {key: theirs}}, lines.append)
    return taken, results["sections"][key], "\n".join(lines)


def test_a_contender_both_sections_dropped_is_not_one_theirs_dropped(committed):
    """Ours already lacked OpenCLIP (recorded in `dropped`), and a later section lacks it the same way: nothing
    was newly dropped, so the later one is taken. Kills B02 (every contender theirs dropped counted, ours's
    own as well)."""
    ours = copy.deepcopy(committed["gpu_train_step"])
    ours["data"]["dropped"] = {"open_clip": "ImportError: x"}
    for field in ("timings", "mfu", "first_loss"):
        ours["data"].get(field, {}).pop("open_clip", None)
    theirs = {**copy.deepcopy(ours), "started": LATER, "md": "LATER"}
    taken, kept, said = _merge("gpu_train_step", ours, theirs)
    assert taken == ["gpu_train_step"] and kept["md"] == "LATER", said
    assert "dropped" not in said.replace("gpu_train_step: taken", "")


def test_a_measurement_that_dropped_a_contender_replaces_our_skip(committed):
    """Ours is a skip (no CUDA), theirs a measurement without OpenCLIP: a measurement replaces a skip whatever it
    lacks. Kills B03 (dropped contenders refused whether or not ours was measured)."""
    gpu = committed["gpu_train_step"]
    ours = {**gpu, "data": {"skipped": "no CUDA"}, "md": "SKIP"}
    theirs = copy.deepcopy(gpu)
    theirs.update(started=LATER, md="MEASURED")
    theirs["data"]["dropped"] = {"open_clip": "ImportError: x"}
    taken, kept, said = _merge("gpu_train_step", ours, theirs)
    assert taken == ["gpu_train_step"] and kept["md"] == "MEASURED", said


def test_a_skip_is_kept_out_as_a_skip_not_as_fewer_contenders(committed):
    """A later skip of a measured GPU section: kept out because it is a skip, not called a section that "dropped"
    every contender ours timed, with --force offered to take it (which would not take a skip either). Kills B04
    (`not not_measured(theirs)` dropped)."""
    gpu = committed["gpu_train_step"]
    theirs = {**gpu, "started": LATER, "data": {"skipped": "no CUDA"}, "md": "SKIP"}
    taken, kept, said = _merge("gpu_train_step", copy.deepcopy(gpu), theirs)
    assert taken == [] and kept == gpu
    assert "is a skip (no CUDA)" in said and "dropped" not in said and "--force" not in said


def test_a_measurement_from_another_machine_replaces_our_skip_of_a_cpu_section(committed):
    """A CPU section: ours a skip, theirs a later measurement on another machine. A measurement of another machine
    is still better than a skip: taken. Kills B05 (the machines compared even when ours is a skip)."""
    enc = committed["encode"]
    ours = {**enc, "data": {"skipped": "x"}, "md": "SKIP"}
    theirs = {**enc, "started": LATER, "md": "MEASURED", "machine": {**enc["machine"], "cpu_model": "Other CPU"}}
    taken, kept, said = _merge("encode", ours, theirs)
    assert taken == ["encode"] and kept["md"] == "MEASURED", said


@pytest.mark.parametrize("without", ["ours", "theirs"])
def test_a_section_without_a_machine_record_is_not_another_machine(committed, without):
    """Sections recorded before they carried a machine record: with one side's record missing there is nothing to
    compare, and the later section is taken. Kills B07 (`and mine and other` dropped: every key "differs" from
    an empty record) and B08 (`and other` dropped)."""
    enc = committed["encode"]
    bare = {k: v for k, v in enc.items() if k != "machine"}
    ours, theirs = (bare, {**enc}) if without == "ours" else ({**enc}, dict(bare))
    theirs.update(started=LATER, md="LATER")
    taken, kept, said = _merge("encode", ours, theirs)
    assert taken == ["encode"] and kept["md"] == "LATER", said
    assert "another machine" not in said
