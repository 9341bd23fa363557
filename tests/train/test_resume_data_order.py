"""The order of a run's training samples, and a resume that continues it only over the same samples in the same
order.

A glob listed shards as text (0, 1, 10, 2, ...) where the folder and a brace range list them in numeric order (0, 1,
2, ..., 10): the same shards and seed were another run. A resume compared only the training set's size, so the same
shards in another order, or a shard swapped for another as large, went on silently at the wrong data position
(the rest of the epoch saw some samples twice and others never)."""
from __future__ import annotations

import io
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from _shards import make_folder, make_pair_shard, make_shard_dir, write_csv  # noqa: E402
from _tiny import tiny_config  # noqa: E402

from kizuna.data.sampler import FINGERPRINT_VERSION, EpochSampler  # noqa: E402
from kizuna.data.sources import build_index, resolve_spec  # noqa: E402
from kizuna.train.checkpointing import read_train_state  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer  # noqa: E402

NAMES = [f"{i}.tar" for i in range(11)]  # unpadded: as text, 10.tar sorts before 2.tar


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards") / "nshards"
    make_shard_dir(root, 11, 4, names="{:d}.tar")  # 44 samples: 5 batches of 8 an epoch
    return root


def _spec(root: Path, names) -> str:
    return "::".join(str(root / n) for n in names)


def _run(out: Path, data, **kw):
    return tiny_config(out, **{"data": str(data), "batch_size": 8, "steps": 2, "warmup_steps": 1, **kw})


def _resume(run: Path, out: Path, data, **kw):
    return _run(out, data, steps=4, resume=str(run / "checkpoints" / "step_0000002"), **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory, shards) -> Path:
    """A run of 2 steps on the shards folder (mid-epoch)."""
    out = tmp_path_factory.mktemp("run")
    ContrastiveTrainer(_run(out, shards)).train()
    return out


# ------------------------------------------------------------------------------------------- finding 1
def test_a_glob_lists_unpadded_shards_in_the_order_of_their_folder_and_a_brace_range(shards):
    orders = {spec: [Path(p).name for _, p in resolve_spec(spec)]
              for spec in (str(shards), f"{shards}/{{0..10}}.tar", f"{shards}/*.tar", f"{shards}/?.tar::{shards}/1?.tar")}
    assert orders[str(shards)] == NAMES
    assert all(order == NAMES for order in orders.values()), orders
    # so the samples (what `--tokenizer train` and `analyze --images` take "the first N" of) come in one order
    assert build_index(f"{shards}/*.tar").keys == build_index(str(shards)).keys


# ------------------------------------------------------------------------------------------- finding 2
def test_a_sampler_refuses_a_position_saved_over_other_data(shards, tmp_path):
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(shards, moved)
    reordered = build_index(_spec(shards, [NAMES[1], NAMES[0], *NAMES[2:]]))
    own = build_index(str(shards)).fingerprint()
    assert build_index(str(moved)).fingerprint() == own  # file names, not paths: the data may move
    assert reordered.fingerprint() != own and len(reordered) == 44

    saved = EpochSampler(44, 8, seed=0, data_fingerprint=own)
    next(iter(saved))
    state = saved.state_dict()
    EpochSampler(44, 8, seed=0, data_fingerprint=build_index(str(moved)).fingerprint()).load_state_dict(state)
    with pytest.raises(ValueError, match=r"another order \(the run read 0\.tar, 1\.tar.*now 1\.tar, 0\.tar"):
        EpochSampler(44, 8, seed=0, data_fingerprint=reordered.fingerprint()).load_state_dict(state)
    # a state saved before fingerprints, or a sampler without one: not checked
    old = {k: v for k, v in state.items() if k != "data_fingerprint"}
    EpochSampler(44, 8, seed=0, data_fingerprint=reordered.fingerprint()).load_state_dict(old)
    EpochSampler(44, 8, seed=0).load_state_dict(state)


def test_a_csv_and_an_image_folder_are_fingerprinted_by_their_samples_wherever_they_lie(tmp_path):
    from kizuna.data.sampler import describe_data_change

    make_folder(tmp_path / "imgs", 6)
    moved = tmp_path / "mnt" / "other_name"
    shutil.copytree(tmp_path / "imgs", moved)
    folder = build_index(str(tmp_path / "imgs")).fingerprint()
    # a folder's own name is not compared: its keys are the paths inside it
    assert describe_data_change(folder, build_index(str(moved)).fingerprint()) is None
    assert folder["parts"][0][2] == 6
    (moved / "a" / "img1.png").rename(moved / "a" / "img9.png")
    (moved / "a" / "img1.txt").rename(moved / "a" / "img9.txt")
    assert describe_data_change(folder, build_index(str(moved)).fingerprint()) == (  # as many, another among them
        "other samples than the run's (imgs has as many samples as the run's, with other keys or its keys in another "
        "order)")

    rows = [(f"imgs/{'a' if i % 2 else 'b'}/img{i}.png", f"caption {i}") for i in range(6)]
    write_csv(tmp_path / "a.csv", rows)
    write_csv(tmp_path / "b.csv", rows[::-1])
    (tmp_path / "copy").mkdir()
    shutil.copytree(tmp_path / "imgs", tmp_path / "copy" / "imgs")
    write_csv(tmp_path / "copy" / "a.csv", rows)
    csv = build_index(str(tmp_path / "a.csv")).fingerprint()
    assert build_index(str(tmp_path / "copy" / "a.csv")).fingerprint() == csv
    assert describe_data_change(csv, build_index(str(tmp_path / "b.csv")).fingerprint()) == (  # rows reordered
        "other samples than the run's (the run's a.csv not given now; b.csv (new))")


def test_a_resume_on_the_same_shards_in_another_order_is_refused_naming_data(shards, run, tmp_path):
    swapped = _spec(shards, [*NAMES[:5], NAMES[6], NAMES[5], *NAMES[7:]])  # the hunt's reordered `::` list
    with pytest.raises(ValueError, match=r"--data .*6\.tar.* gives the same 11 source\(s\) in another order "
                                         r"\(the run read \.\.\., 4\.tar, 5\.tar, 6\.tar.*now \.\.\., 4\.tar, 6\.tar, "
                                         r"5\.tar.*would not mean the same"):
        ContrastiveTrainer(_resume(run, tmp_path / "r", swapped))
    # the glob spelling of the folder is the same data, in the same order now
    assert ContrastiveTrainer(_resume(run, tmp_path / "g", f"{shards}/*.tar")).step == 2


def test_a_resume_on_a_shard_swapped_for_another_as_large_is_refused(shards, run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    make_pair_shard(other / "3.tar", 500, 4)  # as many samples, other ones
    with pytest.raises(ValueError, match=r"--data .*other gives other samples than the run's \(3\.tar has as many "
                                         r"samples as the run's, with other keys"):
        ContrastiveTrainer(_resume(run, tmp_path / "r", other))
    # and a real training set as large as the run's synthetic one
    synthetic = tmp_path / "synthetic"
    ContrastiveTrainer(tiny_config(synthetic, batch_size=8, steps=2, warmup_steps=1, synthetic_length=44)).train()
    with pytest.raises(ValueError, match=r"gives other samples than the run's \(the run's synthetic not given now; "
                                         r"0\.tar \(new\)"):
        ContrastiveTrainer(_resume(synthetic, tmp_path / "s", shards, synthetic_length=44))


def test_a_resume_on_the_data_moved_elsewhere_goes_on_exactly(shards, run, tmp_path):
    moved = tmp_path / "mnt" / "data"
    shutil.copytree(shards, moved)
    full = ContrastiveTrainer(_run(tmp_path / "full", shards, steps=4))
    full.train()
    resumed = ContrastiveTrainer(_resume(run, tmp_path / "r", moved))
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_before_the_fingerprint_resumes_as_before(shards, run, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(run, old)
    path = old / "checkpoints" / "step_0000002" / "train_state.pt"
    state = read_train_state(path.parent)
    state["data"].pop("data_fingerprint", None)
    torch.save(state, path)
    swapped = _spec(shards, [NAMES[1], NAMES[0], *NAMES[2:]])
    assert ContrastiveTrainer(_resume(old, tmp_path / "r", swapped)).step == 2  # not refused
    assert "numeric order" not in capsys.readouterr().err
    # a glob that an older kizuna read in another order: said
    assert ContrastiveTrainer(_resume(old, tmp_path / "g", f"{shards}/*.tar")).step == 2
    err = capsys.readouterr().err
    assert "is now read in numeric order" in err and f"{shards}/*.tar" in err, err


# ------------------------------------------------------------------------------------------- the ViT trainer
def _labelled_shard(path: Path, start: int, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(start, start + n):
            buf = io.BytesIO()
            Image.fromarray(np.full((16, 16, 3), 60 * (i % 4), np.uint8)).save(buf, format="PNG")
            for name, blob in ((f"{i:09d}.cls", str(i % 4).encode()), (f"{i:09d}.png", buf.getvalue())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(blob), 0
                tf.addfile(info, io.BytesIO(blob))


def test_a_vit_resume_refuses_a_swapped_shard_and_goes_on_over_moved_data(tmp_path):
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    data = tmp_path / "colours" / "train"
    _labelled_shard(data / "000000.tar", 0, 16)
    _labelled_shard(data / "000001.tar", 16, 16)
    (data.parent / "classnames.txt").write_text("a\nb\nc\nd\n")

    def cfg(out, root, **kw):
        return make_supervised_config(**{**dict(
            model="mu/4", model_overrides={"width": 32, "mlp_dim": 64, "depth": 1, "heads": 2}, image_size=16,
            data=str(root), val_data="", batch_size=8, steps=2, workers=0, warmup_steps=1, out=str(out),
            progress=False, threads=1), **kw})

    SupervisedTrainer(cfg(tmp_path / "run", data)).train()
    ckpt = str(tmp_path / "run" / "checkpoints" / "step_0000002")
    moved = tmp_path / "mnt" / "colours"
    shutil.copytree(data.parent, moved)
    assert SupervisedTrainer(cfg(tmp_path / "m", moved / "train", steps=3, resume=ckpt)).step == 2
    _labelled_shard(moved / "train" / "000001.tar", 100, 16)
    with pytest.raises(ValueError, match=r"--data .*train gives other samples than the run's \(000001\.tar has as "
                                         r"many samples as the run's, with other keys"):
        SupervisedTrainer(cfg(tmp_path / "s", moved / "train", steps=3, resume=ckpt))
    # the same refusal decoded onto the device (its data position is the sampler's too)
    dev = dict(augment_on="device", crop="pad")
    SupervisedTrainer(cfg(tmp_path / "run_d", data, **dev)).train()
    with pytest.raises(ValueError, match=r"other samples than the run's"):
        SupervisedTrainer(cfg(tmp_path / "d", moved / "train", steps=3, **dev,
                              resume=str(tmp_path / "run_d" / "checkpoints" / "step_0000002")))


# ------------------------------------------------------------------------------------------- review 1
def test_a_csv_of_absolute_paths_is_the_same_data_moved_and_rewritten(tmp_path):
    """A CSV's keys were its paths as written: the data moved to another disk, its CSV of absolute paths rewritten
    to the new place, gave the same samples and the resume was refused."""
    from kizuna.data.sampler import describe_data_change

    def csv_of(images: Path, path: Path, order=range(6)) -> dict:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(path, [(str(images / ("a" if i % 2 else "b") / f"img{i}.png"), f"caption {i}") for i in order])
        return build_index(str(path)).fingerprint()

    make_folder(tmp_path / "disk1" / "images", 6)
    shutil.copytree(tmp_path / "disk1" / "images", tmp_path / "disk2" / "images")
    run = csv_of(tmp_path / "disk1" / "images", tmp_path / "disk1" / "train.csv")
    assert describe_data_change(run, csv_of(tmp_path / "disk2" / "images", tmp_path / "disk2" / "train.csv")) is None
    # the CSV left where it was, or written with paths relative to it: the same
    assert describe_data_change(run, csv_of(tmp_path / "disk2" / "images", tmp_path / "csvs" / "train.csv")) is None
    write_csv(tmp_path / "disk2" / "train.csv", [(f"images/{'a' if i % 2 else 'b'}/img{i}.png", "c") for i in range(6)])
    assert build_index(str(tmp_path / "disk2" / "train.csv")).fingerprint() == run
    # other rows, or the same in another order, still differ
    swapped = csv_of(tmp_path / "disk2" / "images", tmp_path / "disk3" / "train.csv", [1, 0, 2, 3, 4, 5])
    assert describe_data_change(run, swapped) == (
        "other samples than the run's (train.csv has as many samples as the run's, with other keys or its keys in "
        "another order)")


def test_a_refused_data_flag_says_it_may_give_the_runs_files_where_they_lie_now(shards, run, tmp_path):
    """"Drop --data" alone: the run's own path may be gone (the data moved), and dropping the flag cannot work."""
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    make_pair_shard(other / "3.tar", 500, 4)
    with pytest.raises(ValueError, match=r"Drop --data.*, or give the run's own files where they lie now, or start"):
        ContrastiveTrainer(_resume(run, tmp_path / "r", other))


def test_describing_a_change_of_many_parts_is_linear(monkeypatch):
    """Each changed part looked its name up by a scan of the run's parts: 8,000 re-keyed shards took 5.3 s."""
    from kizuna.data import sampler as sampler_mod

    calls = []
    real = sampler_mod._part_id
    monkeypatch.setattr(sampler_mod, "_part_id", lambda p: calls.append(1) or real(p))
    n = 400
    was = {"version": FINGERPRINT_VERSION, "parts": [["tar", f"{i:06d}.tar", 10, f"{i:016x}"] for i in range(n)]}
    now = {"version": FINGERPRINT_VERSION, "parts": [["tar", f"{i:06d}.tar", 10, f"{i + 1:016x}"] for i in range(n)]}
    assert "000000.tar has as many samples as the run's" in sampler_mod.describe_data_change(was, now)
    assert len(calls) <= 4 * n  # it was about n * n / 2


def test_the_fingerprint_hashes_keys_a_block_at_a_time():
    """All a source's keys were joined into one string and encoded (a 4M-row CSV's: 384 MB at once); the digest
    is the same as of that string, so a run's fingerprint does not depend on the block size."""
    import hashlib
    import tracemalloc

    from kizuna.data import sources as sources_mod
    from kizuna.data.sources import SampleIndex

    n = 8 * getattr(sources_mod, "_KEY_BLOCK", 1 << 16) + 5  # several blocks
    keys = [f"part_{i // 10000:05d}/{i:012d}_a1b2c3d4e5f6" for i in range(n)]
    z = np.zeros(n, np.int64)
    index = SampleIndex(["/data/0.tar"], ["tar"], np.zeros(n, np.int32), keys, z, z, [None] * n, [()] * n, z - 1)
    tracemalloc.start()
    try:
        fingerprint = index.fingerprint()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    whole = hashlib.blake2b("\0".join(keys).encode(), digest_size=8).hexdigest()
    assert fingerprint["parts"] == [["tar", "0.tar", n, whole]]
    assert peak < sum(map(len, keys)) / 2, peak  # joined at once: twice the keys' length


def _shard_with_broken(path: Path, n: int, broken: set) -> None:
    """``n`` labelled 16-px images, those in ``broken`` not images at all (they do not decode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.full((16, 16, 3), 60 * (i % 4), np.uint8)).save(buf, format="PNG")
            png = b"not a png at all" if i in broken else buf.getvalue()
            for name, blob in ((f"{i:09d}.cls", str(i % 4).encode()), (f"{i:09d}.png", png)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(blob), 0
                tf.addfile(info, io.BytesIO(blob))


def test_a_device_decoded_resume_refuses_another_image_broken_in_place_of_a_repaired_one(tmp_path):
    """--augment-on device counts the rows that decoded: one image repaired and another broken kept the count and
    the fingerprint, and the resume went on at shifted indices."""
    from kizuna.data.sampler import describe_data_change, with_undecoded_rows
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    fp = {"version": FINGERPRINT_VERSION, "parts": [["tar", "0.tar", 4, "0" * 16]]}
    assert describe_data_change(with_undecoded_rows(fp, [0, 1, 3], 4), with_undecoded_rows(fp, [0, 1, 3], 4)) is None
    assert describe_data_change(with_undecoded_rows(fp, [0, 1, 3], 4), with_undecoded_rows(fp, [0, 2, 3], 4)) == (
        "other images that do not decode than the run's (1, at other rows)")
    assert describe_data_change(fp, with_undecoded_rows(fp, [0, 2, 3], 4)) is None  # a checkpoint from before

    data = tmp_path / "colours" / "train"
    _shard_with_broken(data / "000000.tar", 17, {3})
    (data.parent / "classnames.txt").write_text("a\nb\nc\nd\n")

    def cfg(out, **kw):
        return make_supervised_config(**{**dict(
            model="mu/4", model_overrides={"width": 32, "mlp_dim": 64, "depth": 1, "heads": 2}, image_size=16,
            data=str(data), val_data="", batch_size=8, steps=2, workers=0, warmup_steps=1, out=str(out),
            progress=False, threads=1, augment_on="device", crop="pad"), **kw})

    SupervisedTrainer(cfg(tmp_path / "run")).train()
    ckpt = str(tmp_path / "run" / "checkpoints" / "step_0000002")
    assert SupervisedTrainer(cfg(tmp_path / "same", steps=3, resume=ckpt)).step == 2
    _shard_with_broken(data / "000000.tar", 17, {9})  # 3 repaired, 9 broken: as many images decode
    with pytest.raises(ValueError, match=r"other images that do not decode than the run's \(1, at other rows\).*"
                                         r"An image was repaired or broken"):
        SupervisedTrainer(cfg(tmp_path / "other", steps=3, resume=ckpt))


def test_a_fingerprint_of_an_earlier_version_is_not_compared():
    """Version 1 digested a CSV's paths as written; version 2 inside the folder they share. A checkpoint of
    version 1 was refused as "other samples" although its data had not changed."""
    from kizuna.data.sampler import describe_data_change

    v1 = {"version": 1, "parts": [["csv", "train.csv", 4, "a" * 16]]}
    now = {"version": FINGERPRINT_VERSION, "parts": [["csv", "train.csv", 4, "b" * 16]]}
    assert FINGERPRINT_VERSION == 2 and describe_data_change(v1, now) is None
    assert describe_data_change({**v1, "version": FINGERPRINT_VERSION}, now) is not None
