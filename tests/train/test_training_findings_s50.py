"""Training features taken together (session 50): the locked MiniLM's caption cache was filled a whole batch at a
time (--accum-steps saved it no memory), and --patch-dropout beside a wholly locked image tower was recorded as a
FLIP run that dropped no patch."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.apps.cli import main  # noqa: E402


def test_the_minilm_caption_cache_fills_a_micro_batch_at_a_time(tmp_path):
    from kizuna.train.contrastive import ContrastiveTrainer

    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", text_tower="minilm", precision="fp32", lock_text=True,
                                             batch_size=16, accum_steps=4, steps=1, warmup_steps=0))
    encode, passes = trainer.model.text.sentence_embeddings, []

    def counted(tokens):
        passes.append(len(tokens))
        return encode(tokens)

    trainer.model.text.sentence_embeddings = counted
    captions = [f"a photo number {i}" for i in range(16)]
    out = trainer._text_inputs(captions)["text_embeddings"]
    assert passes == [4, 4, 4, 4]  # the micro-batch of 16 / 4
    with torch.no_grad():  # the rows are the captions', each in its place
        alone = encode(trainer.tokenizer(captions[5:6]))
    torch.testing.assert_close(out[5], alone[0].float(), atol=1e-5, rtol=1e-5)
    trainer._text_inputs(captions[:8] + ["one more caption"] * 8)
    assert passes[4:] == [1]  # only the caption not seen before


def test_patch_dropout_with_a_wholly_locked_image_tower_is_refused(tmp_path, capsys):
    code = main(["train", "--data", "synthetic", "--lock-image", "true", "--patch-dropout", "0.5",
                 "--out", str(tmp_path / "run"), "--print-config"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--patch-dropout 0.5 does nothing here" in err and "--lock-image-unlocked-blocks" in err
    # with blocks unlocked, the dropout acts on them: accepted
    assert main(["train", "--data", "synthetic", "--lock-image", "true", "--lock-image-unlocked-blocks", "1",
                 "--patch-dropout", "0.5", "--out", str(tmp_path / "run2"), "--print-config"]) == 0
