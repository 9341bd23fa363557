"""Mutation findings (session 52): load_model's rereads of a training run's `latest` pointer (its folder pruned
while read), with _load_model stubbed so each case is exact; and the stale tokenizer.json of an HF export removed
before the new weights are written."""
import pytest

from kizuna.models import checkpoint as ck


def _run(tmp_path, steps=(1, 2, 3, 4, 5, 6), names="step_1"):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for s in steps:
        (folder / f"step_{s}").mkdir()
    (folder / "latest").write_text(names)
    return folder


def _stub(monkeypatch, behaviour):
    calls = []

    def fake(path, *args):
        calls.append(path.name)
        return behaviour(path, len(calls))

    monkeypatch.setattr(ck, "_load_model", fake)
    monkeypatch.setattr(ck.time, "sleep", lambda s: None)
    return calls


def test_a_latest_still_naming_the_damaged_folder_is_not_read_again(tmp_path, monkeypatch):
    folder = _run(tmp_path)

    def damaged(path, n):
        raise ck.CheckpointError(f"{path}: not a readable safetensors file")

    calls = _stub(monkeypatch, damaged)
    with pytest.raises(ck.CheckpointError):
        ck.load_model(folder / "latest")
    assert calls == ["step_1"]


def test_a_folder_gone_while_read_is_read_again_from_what_latest_names_now(tmp_path, monkeypatch):
    folder = _run(tmp_path)

    def pruned(path, n):
        if n == 1:
            (folder / "latest").write_text("step_2")
            raise FileNotFoundError(f"{path}/config.json")
        return "model"

    calls = _stub(monkeypatch, pruned)
    assert ck.load_model(folder / "latest") == "model"
    assert calls == ["step_1", "step_2"]


def test_a_latest_that_moves_at_every_read_gives_up_after_its_reads_with_the_error(tmp_path, monkeypatch):
    folder = _run(tmp_path)

    def always_moving(path, n):
        (folder / "latest").write_text(f"step_{n + 1}")
        raise ck.CheckpointError(f"{path}: pruned")

    calls = _stub(monkeypatch, always_moving)
    with pytest.raises(ck.CheckpointError, match="pruned"):
        ck.load_model(folder / "latest")
    assert len(calls) == ck.LATEST_READS == 4


def test_a_reexport_stopped_after_the_weights_leaves_no_old_tokenizer_json(tmp_path, monkeypatch):
    import kizuna
    from kizuna.models import convert_hf

    (tmp_path / "tokenizer.json").write_text("{}")  # (an earlier export's, which transformers reads first)
    real = convert_hf.atomic_write_text

    def stop_at_config(path, text, *a, **k):
        if path.name == "config.json":
            raise KeyboardInterrupt
        return real(path, text, *a, **k)

    monkeypatch.setattr(convert_hf, "atomic_write_text", stop_at_config)
    with pytest.raises(KeyboardInterrupt):
        convert_hf.export_hf_clip(kizuna.create_model("ViT-mu-8"), tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "tokenizer.json").exists()


def test_a_latest_that_is_no_pointer_file_is_read_once(tmp_path, monkeypatch):
    def missing(path, n):
        raise FileNotFoundError(f"{path}: no such checkpoint")

    calls = _stub(monkeypatch, missing)
    with pytest.raises(FileNotFoundError):
        ck.load_model(tmp_path / "checkpoints" / "latest")  # (no such file: nothing a run rewrites)
    assert calls == ["latest"]


def test_an_export_over_a_folder_with_an_unreadable_config_goes_on(tmp_path):
    import kizuna
    from kizuna.models import convert_hf

    (tmp_path / "config.json").write_text("{ not json")  # (no kizuna record: a torn earlier export's)
    convert_hf.export_hf_clip(kizuna.create_model("ViT-mu-8"), tmp_path)
    assert "vision_config" in (tmp_path / "config.json").read_text()
