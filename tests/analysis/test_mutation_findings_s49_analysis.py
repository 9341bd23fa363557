"""Mutation-testing round (stop 49): which recorded weights digests are this model's (the current kind, an
earlier kizuna's bare sha256 or blake2b, none), and the blake2b digest's exact bytes."""
from types import SimpleNamespace

import torch

from kizuna.analysis.report import WEIGHTS_DIGEST, _blake2b_digest, _same_weights


def _module():
    m = torch.nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.copy_(torch.arange(6.0).reshape(2, 3))
        m.bias.copy_(torch.tensor([1.0, -1.0]))
    m.register_buffer("empty", torch.zeros(0))  # (a tensor of no bytes hashes its name, shape and dtype only)
    return m


def test_the_blake2b_digest_is_the_one_earlier_kizunas_recorded():
    """Pinned: a report written from 5c6af95 to ca9bdab recorded exactly this (8 bytes of blake2b over each
    tensor's name, flat shape, dtype and bytes); any other value makes its reports another model's."""
    assert _blake2b_digest(_module()) == "c249ae268c6b4112"


def _target(digest="0123456789abcdef"):
    return SimpleNamespace(weights=WEIGHTS_DIGEST + digest, model=_module())


def test_same_weights_by_each_kind_of_digest():
    t = _target()
    assert _same_weights(None, t) is None and _same_weights(12, t) is None  # none recorded: not judged by it
    assert _same_weights(WEIGHTS_DIGEST + "0123456789abcdef", t) is True
    assert _same_weights(WEIGHTS_DIGEST + "fedcba9876543210", t) is False
    assert _same_weights("0123456789abcdef", t) is True  # b537ddf's bare sha256
    assert _same_weights("c249ae268c6b4112", t) is True  # the blake2b before it
    assert _same_weights("fedcba9876543210", t) is False
    # a current-kind digest is compared whole: the blake2b or bare value behind the prefix is another model's
    assert _same_weights(WEIGHTS_DIGEST + "c249ae268c6b4112", t) is False


def _panel_beside_a_report(tmp_path, recorded_model):
    """A prediction panel that recorded no weights (an earlier kizuna's), then a report written beside it."""
    import json

    import kizuna
    from kizuna.analysis.report import full_report, load_target, synthetic_images

    torch.manual_seed(0)
    path = kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=0, width=32, mlp_dim=64),
                             tmp_path / "v.safetensors")  # (no head: no panel of its own)
    target = load_target(str(path))
    images = synthetic_images(target, n=2)
    out = tmp_path / "fig"
    out.mkdir()
    source = target.source if recorded_model is None else recorded_model
    (out / "predict.json").write_text(json.dumps({"model": source, "image": images[1][0]}))
    (out / "predict.png").write_bytes(b"")
    full_report(target, out, images=images, components=4)
    return out


def test_a_panel_without_weights_is_kept_for_the_same_model_path(tmp_path):
    assert (_panel_beside_a_report(tmp_path, None) / "predict.json").exists()


def test_a_panel_without_weights_of_another_model_path_is_removed(tmp_path):
    out = _panel_beside_a_report(tmp_path, str(tmp_path / "other.safetensors"))
    assert not (out / "predict.json").exists() and not (out / "predict.png").exists()
