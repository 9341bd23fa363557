"""Mutation findings (session 52): the contrastive size checks make_config runs before a run starts: the
smallest context a BPE tokenizer takes is allowed, and each loss's --batch-size 1 refusal says its own reason."""
import pytest

from kizuna.data.tokenizer import MIN_CONTEXT_LENGTH
from kizuna.train.config import batch_of_one, make_config


def test_the_smallest_bpe_context_is_allowed_and_one_less_refused():
    cfg = make_config(model="ViT-mu-8", data="synthetic", context_length=MIN_CONTEXT_LENGTH)
    assert cfg.context_length == MIN_CONTEXT_LENGTH
    with pytest.raises(ValueError, match="--context-length must be 0"):
        make_config(model="ViT-mu-8", data="synthetic", context_length=MIN_CONTEXT_LENGTH - 1)


def test_a_synthetic_epoch_of_one_pair_is_allowed_and_none_refused():
    assert make_config(model="ViT-mu-8", data="synthetic", synthetic_length=1).synthetic_length == 1
    with pytest.raises(ValueError, match="--synthetic-length must be >= 1"):
        make_config(model="ViT-mu-8", data="synthetic", synthetic_length=0)


def test_each_loss_says_its_own_reason_for_a_batch_of_one():
    assert batch_of_one("clip").startswith("--batch-size 1 with the CLIP (softmax) loss: an image's only candidate")
    assert batch_of_one("siglip").startswith("--batch-size 1 with the SigLIP loss: the sigmoid loss has no negative")
