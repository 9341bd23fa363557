"""Mutation findings (session 50b), evaluation output: the few-shot band of plot_zeroshot_vs_probe (the sample std,
none for one seed), a suite run's name of 0 in its record, its plot files and its figures' titles, markdown_cell's
underscore rule at the ends of a text and its backslashes, a model path not found in a suite, an "act" beside a
folder named like a preset, and the suite's advice for classification data under a retrieval task."""
from __future__ import annotations

import statistics

import pytest

from kizuna.eval.linear_probe import ProbeResult, plot_zeroshot_vs_probe
from kizuna.eval.suite import markdown_cell, normalise_suite, run_entry


def _bands(monkeypatch, result, tmp_path) -> list:
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    seen = []
    real = Axes.fill_between

    def spy(self, x, y1, y2=0, **kw):
        seen.append((list(x), [float(v) for v in y1], [float(v) for v in y2]))
        return real(self, x, y1, y2, **kw)

    monkeypatch.setattr(Axes, "fill_between", spy)
    plot_zeroshot_vs_probe(result, tmp_path / "p.png")
    return seen


def test_the_few_shot_band_is_the_sample_std_and_none_for_one_seed(monkeypatch, tmp_path):
    few = {1: [0.5], 2: [0.2, 0.6]}
    res = ProbeResult(metrics={"lp_acc1": 0.7}, l2=1.0, sweep=[], few_shot=few, dataset="d")
    [(ks, low, high)] = _bands(monkeypatch, res, tmp_path)
    assert ks == [1, 2]
    assert low[0] == pytest.approx(50) and high[0] == pytest.approx(50)  # one seed: no band
    s = 100 * statistics.stdev(few[2])  # 28.28, not the population's 20
    assert low[1] == pytest.approx(40 - s) and high[1] == pytest.approx(40 + s)


def test_a_run_named_0_keeps_its_name_in_its_record_plot_files_and_titles(colours, tmp_path, monkeypatch):
    import kizuna.eval.suite as suite

    titles = []
    real = suite.drawn

    def spy(draw, path, *a, **kw):
        titles.append(kw.get("model"))
        return real(draw, path, *a, **kw)

    monkeypatch.setattr(suite, "drawn", spy)
    out = tmp_path / "out"
    out.mkdir()
    records = run_entry({"model": "ViT-mu-8", "dataset": str(colours), "task": "zeroshot", "name": 0,
                         "max_samples": 4}, out_dir=out, echo=None, progress=False)
    assert [r["model"] for r in records] == ["0"]
    assert titles == ["0"]
    assert any(p.name.startswith("0__") for p in out.iterdir()), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("text,shown", [("_a1", "\\_a1"), ("a1_", "a1\\_"), ("_", "\\_"), ("a_b", "a_b"),
                                        ("C:\\x", "C:\\\\x"), ("a\\|b", "a\\\\\\|b")])
def test_markdown_underscores_at_the_ends_and_backslashes(text, shown):
    assert markdown_cell(text) == shown


@pytest.mark.parametrize("model", ["models/clip.safetensors", "clip.safetensors", "runs/clip"])
def test_a_relative_model_path_not_found_says_where_it_was_looked_for(tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"read from the current folder, .*, not the suite file's"):
        normalise_suite([{"model": model, "task": "relation_swap"}], "s.json")


def test_a_model_name_not_a_path_is_not_said_to_be_read_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as e:
        normalise_suite([{"model": "ViT-nope-8", "task": "relation_swap"}], "s.json")
    assert "current folder" not in str(e.value)


def test_act_beside_a_folder_named_like_a_preset_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ViT-mu-8").mkdir()  # an output folder, no model in it: the preset is meant
    with pytest.raises(ValueError, match='"act" names the activation of an OpenAI-layout'):
        normalise_suite([{"model": "ViT-mu-8", "task": "relation_swap", "act": "gelu"}], "s.json")


def test_classification_data_under_retrieval_advises_the_zeroshot_task_key():
    from kizuna.eval.datasets import in_suite_words

    said = in_suite_words(ValueError("a classification dataset; evaluate it with `kizuna eval zeroshot` instead"))
    assert 'give the run "task": "zeroshot"' in said and "kizuna eval zeroshot" not in said
