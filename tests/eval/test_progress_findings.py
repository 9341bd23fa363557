"""The skip counts an evaluation prints and records, checked against the samples it read (found by comparing
every printed count with the truth)."""
from __future__ import annotations

import pytest
from _evalhelpers import noise_image, write_tar

from kizuna.data.sources import SkipCounter
from kizuna.eval.datasets import load_dataset


def _shard(root, task, lacking=(7, 8), n=10):
    members = []
    for i in range(n):
        key = f"{i:09d}"
        members.append((f"{key}.png", noise_image(i)))
        if i not in lacking:
            members.append((f"{key}.cls", str(i % 2).encode()) if task == "classification"
                           else (f"{key}.txt", f"a photo number {i}".encode()))
    write_tar(root / "test" / "000000.tar", members)
    (root / "classnames.txt").write_text("cat\ndog\n")
    return root


@pytest.mark.parametrize("task,reason", [("classification", "missing_label"), ("retrieval", "missing_caption")])
def test_max_samples_counts_the_missing_labels_and_captions_of_the_samples_it_read(tmp_path, task, reason):
    """`eval retrieval --max-samples 5` on a split whose first 5 samples are whole said "skipped 2 samples:
    missing_caption=2" (the split's samples 7 and 8, never read); the same for missing labels."""
    root = _shard(tmp_path, task)
    first = load_dataset(root, task=task, max_samples=5)
    assert len(first) == 5 and not first.skips
    past = load_dataset(root, task=task, max_samples=8)  # samples 0-6 and 9: read past 7 and 8
    assert len(past) == 8 and past.skips == {reason: 2}
    assert [w.split()[1] for w in past.skips.examples[reason]] == ["000000007", "000000008"]
    assert load_dataset(root, task=task).skips == {reason: 2}
    seven = load_dataset(root, task=task, max_samples=7).skips  # 0-6: the last kept is 6
    assert seven == {} and not seven.examples


def test_a_damaged_shard_is_not_counted_as_a_skipped_sample():
    """A cut tar printed "skipped 2 samples: damaged_shard=1, truncated=1": one sample was skipped, and the shard
    (whose samples past the damage are unknown) is no sample."""
    skips = SkipCounter()
    skips.add("damaged_shard", "cut.tar")
    skips.add("truncated", "cut.tar/000000005")
    text = skips.report()
    assert text.startswith("skipped 1 samples: truncated=1; damaged_shard=1 (a shard: the samples past the damage")


def test_an_unlabelled_image_of_a_classification_set_found_by_itself_is_a_missing_label(tmp_path):
    """load_dataset without task= indexes for either task: an image with neither .cls nor .txt in a classification
    set was counted as a missing caption (missing_label when the task was named)."""
    root = _shard(tmp_path, "classification")
    assert load_dataset(root).skips == load_dataset(root, task="classification").skips == {"missing_label": 2}
    assert load_dataset(root, max_samples=5).skips == {}
    retrieval = _shard(tmp_path / "r", "retrieval")
    assert load_dataset(retrieval).skips == {"missing_caption": 2}


def test_max_samples_of_every_usable_sample_leaves_out_the_rejects_after_the_last(tmp_path):
    """--max-samples equal to the usable samples counted the rejects after the last one kept (`>`, not `>=`)."""
    root = _shard(tmp_path, "retrieval", lacking=(8, 9))
    assert load_dataset(root, task="retrieval", max_samples=8).skips == {}
    assert load_dataset(root, task="retrieval").skips == {"missing_caption": 2}


def test_max_samples_over_a_csv_of_captions_counts_the_rows_it_read(tmp_path):
    """CSV retrieval (one row a caption, grouped by image) lost where its rejected rows were: rows past the images
    kept were counted."""
    from PIL import Image

    rows = ["filepath,title"]
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
        rows += [f"{i}.png,a photo number {i}", f"{i}.png,picture {i}"]
    rows += ["4.png,", "5.png,"]  # blank captions of the last two images: rejected rows
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    assert load_dataset(tmp_path / "data.csv", task="retrieval", max_samples=3).skips == {}
    assert load_dataset(tmp_path / "data.csv", task="retrieval").skips.total == 2
