"""The typographic attack in one loader pass (stop 47's review of start methods): a pass per written class started
the loader's workers once per class, seconds each under spawn (macOS) and forkserver (Linux from Python 3.14), and
`eval probes --workers 2` took 18-50x its time with no workers on CIFAR-10."""
from collections import Counter

from _evalhelpers import classification_wds

from kizuna.eval import probes
from kizuna.eval.datasets import load_dataset


def test_the_attack_encodes_every_attacked_image_in_one_pass_each_with_its_own_word(tmp_path, tiny, monkeypatch):
    model, tok = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=12, corrupt=(5,)))
    passes, words = [], []
    encode = probes.encode_images
    monkeypatch.setattr(probes, "encode_images", lambda *a, **k: passes.append(k.get("desc")) or encode(*a, **k))
    write = probes.render_text
    monkeypatch.setattr(probes, "render_text", lambda img, word, **kw: words.append(word) or write(img, word, **kw))
    t = probes.typographic_attack(model, tok, ds, progress=False, batch_size=4, num_workers=0)
    assert passes == ["typographic: clean", "typographic: attacked"]
    usable = [i for i in range(len(ds)) if i != 5]  # the corrupt image is written on by no pass
    assert Counter(words) == Counter(ds.classnames[t.written[i]] for i in usable)
    assert t.n == 11


def test_a_repeated_sample_is_scored_against_the_word_written_on_it(tmp_path, tiny, monkeypatch):
    """One loader pass writes one word on a row: a row repeated in a subset got the last copy's word on every
    copy, while the record (and the follow rate) scored each copy against its own draw."""
    model, tok = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=9))
    sub = ds.subset([5, 5, 5, 5, 7, 1])
    words = []
    write = probes.render_text
    monkeypatch.setattr(probes, "render_text", lambda img, word, **kw: words.append(word) or write(img, word, **kw))
    t = probes.typographic_attack(model, tok, sub, progress=False, batch_size=2, num_workers=0)
    assert len(set(t.written[:4].tolist())) == 1  # the copies of row 5: one word, the one written on them
    assert Counter(words) == Counter(sub.classnames[k] for k in t.written)
