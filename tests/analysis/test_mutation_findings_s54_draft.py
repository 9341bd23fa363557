"""Session 54 mutation findings: `vit augment`'s loader column decodes JPEGs as the training loader does
(train/supervised.py loader_draft_size, analysis/augmentation.py)."""
from __future__ import annotations

from _labelled import odd_even_shards

from kizuna.data.transforms import crop_draft_size
from kizuna.train.supervised import loader_draft_size, make_supervised_config


def test_the_loader_draft_size_covers_the_smallest_random_resized_crop():
    """Kills: loader_draft_size's crop test turned around (a pad crop decoded reduced, an rrc one in full) and its
    scale read from the upper end of crop_scale (1.0: a draft that did not cover the smallest crop)."""
    rrc = make_supervised_config(crop="rrc", crop_scale=(0.25, 1.0), image_size=32)
    assert loader_draft_size(rrc, 32) == crop_draft_size(32, 0.25) > 32 * 2
    assert loader_draft_size(make_supervised_config(crop="pad", image_size=32), 32) == 32


def test_the_preview_decodes_with_the_loaders_draft_size(tmp_path, monkeypatch):
    """Kills: augmentation_samples' PairDataset built without draft_size (the preview decoded in full, not what
    training saw)."""
    import kizuna.data.sources as sources
    from kizuna.analysis.augmentation import augmentation_samples

    made = []

    class Recorded(sources.PairDataset):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("draft_size"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sources, "PairDataset", Recorded)
    shards = odd_even_shards(tmp_path, 8, 4)
    cfg = make_supervised_config(data=str(shards / "train"), image_size=16, crop="rrc", crop_scale=(0.5, 1.0))
    augmentation_samples(cfg, 2, 1, mix=False)
    assert made and made[-1] == loader_draft_size(cfg, 16) == crop_draft_size(16, 0.5)
