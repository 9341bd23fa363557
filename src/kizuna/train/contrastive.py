"""The contrastive trainer (CLIP / SigLIP / LiT / FLIP), one process or many under `torchrun`.

One optimizer step:
  1. take the global batch's local share (n = batch_size / world) and split it into accum_steps
     micro-batches;
  2. accum_steps == 1: forward, distributed loss (all ranks' features), backward;
     accum_steps > 1 (GradCache, Gao et al. 2021): forward every micro-batch without a graph, compute
     the loss on the cached features of the *full* batch, backpropagate to those features, then
     re-forward each micro-batch with its RNG state restored and push the cached feature gradients
     through it. Negatives are the full batch, memory that of one micro-batch;
  3. clip gradients, AdamW, cosine schedule, clamp the logit scale at ln 100.
Everything a resumed run needs (model, optimizer, scheduler, RNG, data position) is checkpointed.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re
import sys
import warnings
from pathlib import Path

import torch

import kizuna
from kizuna.apps.common import is_preset_spec
from kizuna.data.tokenizer import MIN_BPE_VOCAB
from kizuna.models.checkpoint import load_model
from kizuna.models.clip import ClipConfig, ClipModel
from kizuna.models.presets import check_override_types, follow_overrides, refuse_a_vision_head

from .checkpointing import load_resumed_model
from .config import TrainConfig, batch_of_one, check_minilm, deep_merge, overrides_flag
from .data import build_dataset, build_loader, training_places, warn_if_evaluated_on_training_data
from .distributed import contrastive_loss, from_rank0
from .optim import make_optimizer
from .towers import lock_tower
from .trainer import OUTPUT_CHECK_SAMPLES, Trainer

# What a checkpoint given as --model decides (the model's own config and tokenizer).
CHECKPOINT_FIXED = ("model_overrides", "loss", "text_tower", "tokenizer", "tokenizer_vocab_size", "context_length")
# Settings that make the model and its tokenizer: a resumed run continues with the checkpoint's.
RESUME_FIXED = ("model", "act", "model_overrides", "loss", "text_tower", "tokenizer", "tokenizer_vocab_size", "context_length",
                "synthetic_image_size")
# Which parameters train shapes the optimizer's saved state (its groups hold only those): another lock cannot load it.
RESUME_STATE_FIXED = ("lock_image", "lock_image_unlocked_blocks", "lock_text", "lock_text_unlocked_blocks")


def model_config(cfg: TrainConfig) -> ClipConfig:
    """The ClipConfig a fresh run starts from: preset + overrides + loss/tower/tokenizer choices."""
    preset = kizuna.clip_config(cfg.model)
    check_override_types(preset.to_dict(), cfg.model_overrides)  # {"embed_dim": "64"} failed in torch
    d = deep_merge(preset.to_dict(), copy.deepcopy(cfg.model_overrides))
    if cfg.data == "synthetic":
        d["vision"]["image_size"] = cfg.synthetic_image_size
    follow_overrides(d, preset, cfg.model_overrides)  # as create_model: a preprocess.image_size override stays
    # "model" keeps the preset's loss: a default of "clip" turned a siglip-* preset into a CLIP model silently.
    # Another loss brings its paper's scale, bias and clamp, except where --model-overrides names them (they were
    # replaced: {"init_logit_bias": -5} with --loss siglip started from -10, and as {"loss": "siglip"} from -5)
    paper = {"siglip": dict(init_logit_scale=math.log(10), init_logit_bias=-10.0, max_logit_scale=None),
             "clip": dict(init_logit_scale=math.log(1 / 0.07), init_logit_bias=None, max_logit_scale=math.log(100))}
    # (against the preset's loss: `--loss siglip` beside an override saying the same kept the preset's CLIP scale
    # and no bias, and was refused as "needs a logit bias")
    if cfg.loss in paper and preset.loss != cfg.loss:
        d.update({key: value for key, value in paper[cfg.loss].items() if key not in cfg.model_overrides},
                 loss=cfg.loss)
    if d["loss"] == "clip" and d.get("init_logit_bias") is not None:
        # the softmax loss never uses a bias (it shifts every logit alike), so the parameter got no gradient: it
        # never trained, GradCache failed on its missing grad and DDP on an unused parameter. (A model saved so
        # still loads: its bias shifts every logit alike.)
        raise ValueError(f"--model-overrides init_logit_bias={d['init_logit_bias']} is for the sigmoid loss; the "
                         "CLIP (softmax) loss uses no logit bias: leave init_logit_bias out or train with --loss siglip")
    if d.get("init_logit_scale") is not None and d["init_logit_scale"] < 0:  # (raised to the floor after one step)
        raise ValueError(f"--model-overrides init_logit_scale={d['init_logit_scale']}: a scale under 1, which "
                         "training raises to 1 (ln 1 = 0, OpenCLIP's floor) after its first step; give 0 or more")
    refuse_a_vision_head(d)  # (as clip_config does: this merge goes around it)
    if cfg.context_length:
        d["text"]["context_length"] = cfg.context_length
        d["tokenizer"]["context_length"] = cfg.context_length
    if cfg.text_tower == "minilm":
        # a TrainConfig built without make_config: its text overrides would be recorded in the model's config
        # and ignored by the MiniLM tower (make_config refuses them, or drops a config file's)
        check_minilm(cfg, d["embed_dim"])
        d["text"].update(kind="minilm", output_dim=d["embed_dim"])
        d["tokenizer"] = {"type": "minilm", "context_length": cfg.context_length or 64}
    try:
        mcfg = ClipConfig.from_dict(d)
    except TypeError as e:  # a key the config classes do not have, e.g. {"vision": {"depht": 4}}
        raise ValueError(f"--model-overrides {cfg.model_overrides}: {e} (the fields are those of "
                         f"kizuna.ClipConfig and its vision/text parts; `kizuna info {cfg.model}` shows them)") from None
    mcfg.check_tokenizer(tokenizer_to_come=cfg.tokenizer == "train")  # (its end-of-text id is checked once trained)
    return mcfg


class ContrastiveTrainer(Trainer):
    resume_fixed = RESUME_FIXED
    resume_state_fixed = RESUME_STATE_FIXED
    data_size_fields = ("data", "synthetic_length", "csv_image_key", "csv_caption_key")
    batch_key = "captions"

    def __init__(self, cfg: TrainConfig, named: frozenset[str] | None = None):
        """``named``: the fields the command line set (kizuna.train.config.named_fields); see Trainer.start."""
        cfg = self.start(cfg, named)
        self.eval_datasets: dict = {}  # the evaluation datasets of this run, indexed once (here, as they are checked)
        check_evaluation_data(cfg, self.eval_datasets)

        # Model and tokenizer: from the checkpoint being resumed, or fresh (maybe training a tokenizer).
        if self.resume_from is not None:
            model = _clip_or_error(load_resumed_model(self.resume_from), str(self.resume_from))
        elif not is_preset_spec(cfg.model):  # (an empty folder named like the preset is not a checkpoint: as every
            # other command reads it, it failed with "folder has no config.json")
            refuse_settings_a_checkpoint_fixes(cfg, self.named)
            model = _clip_or_error(load_model(cfg.model, act=cfg.act or None), cfg.model)
            cfg = self.cfg = scenes_at_model_size(cfg, model, self.named)
        else:
            if cfg.act:
                raise ValueError(f"--act {cfg.act}: --act names the activation of an OpenAI-layout checkpoint "
                                 f"given as --model; a preset's ({cfg.model}) is set with "
                                 + overrides_flag(cfg.model_overrides,
                                                  {"vision": {"act": cfg.act}, "text": {"act": cfg.act}})
                                 + " instead")
            mcfg = model_config(cfg)
            if cfg.tokenizer == "train":
                mcfg = self._train_tokenizer(mcfg)
            elif cfg.tokenizer not in ("model", ""):
                mcfg.tokenizer = {"type": cfg.tokenizer, "context_length": mcfg.text.context_length}
            model = ClipModel(mcfg)
            if mcfg.text.kind == "minilm":
                model.text.load_pretrained_weights()
        self.model: ClipModel = model.to(self.device).train()
        # LiT locks a pretrained tower; one built from a preset is random, and locked it stays random (an ablation,
        # or a checkpoint forgotten: said once, the run goes on)
        fresh = self.resume_from is None and is_preset_spec(cfg.model)
        random_locked = [f"--lock-{tower}" for tower, locked in (("image", cfg.lock_image), ("text", cfg.lock_text))
                         if locked and fresh and not (tower == "text" and model.cfg.text.kind == "minilm")]
        if random_locked and self.dist.is_main:
            minilm_hint = " (or, for the text, the pretrained MiniLM tower: --text-tower minilm)" if (
                "--lock-text" in random_locked) else ""
            warnings.warn(f"{' and '.join(random_locked)} lock{'s' if len(random_locked) == 1 else ''} a tower of the "
                          f"preset {cfg.model}, which is randomly initialised: it stays random. LiT locks a pretrained "
                          f"tower: pass a checkpoint as --model{minilm_hint}", UserWarning, stacklevel=2)
        if cfg.loss == "model":  # recorded as the loss the run trains with, which a resume then compares against
            cfg = self.cfg = dataclasses.replace(cfg, loss=self.model.cfg.loss)
        if cfg.batch_size == 1:  # a contrastive loss needs negatives: a batch of one pair has none
            raise ValueError(batch_of_one(cfg.loss))
        self.tokenizer = kizuna.get_tokenizer(self.model)
        ids, embeddings = getattr(self.tokenizer, "vocab_size", 0), self.model.cfg.text.vocab_size
        if self.model.cfg.text.kind != "minilm" and ids > embeddings:  # failed at step 1, deep in an embedding
            raise ValueError(f"the tokenizer has {ids} ids but the text tower embeds {embeddings}: give the text "
                             f"tower vocab_size >= {ids} ("
                             + overrides_flag(self.cfg.model_overrides, {"text": {"vocab_size": ids}})
                             + ")" + ("" if embeddings < MIN_BPE_VOCAB else  # (a BPE needs its 512 bytes + 2)
                                      ", or train a tokenizer of the tower's size: --tokenizer train "
                                      f"--tokenizer-vocab-size {embeddings}"
                                      + (" (and drop text.vocab_size from --model-overrides)"
                                         if "vocab_size" in (self.cfg.model_overrides.get("text") or {}) else "")))
        self.dataset, _ = build_dataset(cfg, self.model.cfg.preprocess, train=True)
        # pinned batches only for a GPU run: pinning starts CUDA (a context on GPU 0) where a GPU is merely present
        self.loader, self.sampler = build_loader(cfg, self.dataset, self.per_rank_batch, self.dist.rank,
                                                 self.dist.world_size, pin_memory=self.device.type == "cuda")
        self._configure_model()
        self.text_cache: dict[str, torch.Tensor] = {}
        self.prepare_optimisation(make_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps))
        self.open_log()
        if self.dist.is_main:
            warn_if_best_is_picked_on_test(cfg)
            index = getattr(self.dataset, "index", None)
            trained = training_places(index) if index is not None else ()
            for (folder, task, _, _), ds in self.eval_datasets.items():
                flag = "--eval-zeroshot" if task == "classification" else "--eval-retrieval"
                warn_if_evaluated_on_training_data(trained, ds.source, flag, folder)
        index = getattr(self.dataset, "index", None)
        if index is not None and self.dist.is_main:  # also without skips: what the run trains on
            print(f"data: {len(index)} usable samples"
                  + (f"; while indexing {index.skips.report()}" if index.skips else ""), file=sys.stderr)
            if index.skips and self.resume_from is None:  # the run's log has them from its start (a resume
                self.log_skips(index.skips, "index_skipped")  # logged them again)

    # ----- set-up ------------------------------------------------------------------------------
    def best_metric(self, cfg: TrainConfig) -> tuple[str | None, str]:
        return cfg.best_metric or None, cfg.best_mode

    def check_config(self, cfg: TrainConfig) -> None:
        check_best_metric(cfg)
        parts = self.dist.world_size * cfg.accum_steps
        if cfg.batch_size % parts:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by world_size x accum_steps "
                             f"({self.dist.world_size} x {cfg.accum_steps})")
        share = cfg.batch_size // self.dist.world_size
        if cfg.data == "synthetic" and cfg.synthetic_hard_negatives and self.dist.world_size > 1 and share % 2:
            # each rank pairs the positions of its own share: an odd one left another pairing than one process's
            # (other twins, other numbers, without a word)
            raise ValueError(f"--synthetic-hard-negatives pairs batch positions (0-1, 2-3, ...) within each rank's "
                             f"share: --batch-size {cfg.batch_size} over {self.dist.world_size} ranks leaves each an "
                             f"odd {share}; give a batch size divisible by {2 * self.dist.world_size}")

    def _train_tokenizer(self, mcfg: ClipConfig) -> ClipConfig:
        from kizuna.data.tokenizer import tokenizer_from_config, train_bpe_tokenizer

        ctx = self.cfg.context_length or mcfg.text.context_length

        def train():
            _, captions = build_dataset(self.cfg, mcfg.preprocess, train=True)
            return train_bpe_tokenizer(captions(50_000), vocab_size=self.cfg.tokenizer_vocab_size,
                                       context_length=ctx).to_config()

        # trained once, on rank 0, and sent to the others: the same ids everywhere, and the work done once
        tok = tokenizer_from_config(from_rank0(train))
        if tok.vocab_size < self.cfg.tokenizer_vocab_size and self.dist.is_main:  # (recorded as asked: unsaid)
            print(f"note: the captions gave a BPE of {tok.vocab_size} tokens, fewer than the "
                  f"{self.cfg.tokenizer_vocab_size} asked for (it ran out of merges); the text tower embeds "
                  f"{tok.vocab_size}", file=sys.stderr)
        # the tower's end-of-text id follows the tokenizer's as for any new config (ClipConfig.check_tokenizer)
        text = {**mcfg.text.to_dict(), "vocab_size": tok.vocab_size, "context_length": ctx}
        mcfg = ClipConfig.from_dict({**mcfg.to_dict(), "tokenizer": tok.to_config(), "text": text})
        mcfg.check_tokenizer()
        return mcfg

    def _configure_model(self):
        cfg = self.cfg
        if self.model.cfg.loss == "clip" and self.model.logit_bias is not None:
            # a saved CLIP-loss model with a bias (fresh ones are refused by model_config): the softmax loss gives
            # it no gradient, which GradCache failed on and DDP would take for an unused parameter. It stays
            # as it is, a shift of every logit alike.
            self.model.logit_bias.requires_grad_(False)
        self.model.visual.patch_dropout = cfg.patch_dropout
        if cfg.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        if cfg.lock_image:
            lock_tower(self.model.visual, cfg.lock_image_unlocked_blocks)
        if cfg.lock_text:
            if self.model.cfg.text.kind == "minilm":  # the pretrained encoder is locked; its projection trains
                if cfg.lock_text_unlocked_blocks:  # a MiniLM checkpoint given as --model: the config check missed it
                    raise ValueError(f"--lock-text-unlocked-blocks {cfg.lock_text_unlocked_blocks}: the MiniLM text "
                                     "tower is locked whole (its encoder's outputs are cached); pass 0")
                for p in self.model.text.encoder.parameters():
                    p.requires_grad_(False)
                self.model.text.encoder.eval()
            else:
                lock_tower(self.model.text, cfg.lock_text_unlocked_blocks)
        trained = [name for name, p in self.model.named_parameters() if p.requires_grad]
        if trained and set(trained) <= {"logit_scale", "logit_bias"} and self.dist.is_main:
            warnings.warn("--lock-image and --lock-text lock both towers whole: only the logit scale"
                          + (" and bias train" if "logit_bias" in trained else " trains") + " (unlock some blocks "
                          "with --lock-image-unlocked-blocks or --lock-text-unlocked-blocks, or lock one tower)",
                          UserWarning, stacklevel=2)

    @property
    def cached_text(self) -> bool:
        """A locked MiniLM encoder is run once per caption; its outputs are cached."""
        return self.cfg.lock_text and self.model.cfg.text.kind == "minilm"

    # ----- one step ----------------------------------------------------------------------------
    def _text_inputs(self, captions: list[str]) -> dict:
        if not self.cached_text:
            return {"tokens": self.tokenizer(captions).to(self.device)}
        missing = sorted({c for c in captions if c not in self.text_cache})
        # a micro-batch at a time: the whole batch's captions in one pass held MiniLM's activations for all of
        # them, and --accum-steps saved no memory (batch 1024: +654 MB at accum 16, as at accum 1)
        chunk = max(1, self.per_rank_batch // self.cfg.accum_steps)
        for start in range(0, len(missing), chunk):
            part = missing[start:start + chunk]
            with torch.no_grad():
                tokens = self.tokenizer(part).to(self.device)
                emb = self.model.text.sentence_embeddings(tokens).float().cpu()
            self.text_cache.update(zip(part, emb))
        return {"text_embeddings": torch.stack([self.text_cache[c] for c in captions]).to(self.device)}

    def _loss(self, out: dict) -> torch.Tensor:
        return contrastive_loss(self.model.cfg.loss, out["image_features"].float(), out["text_features"].float(),
                                out["logit_scale"].float(), None if out["logit_bias"] is None else out["logit_bias"].float())

    def fit_batch(self, batch: dict) -> dict[str, float]:
        return {"loss": self.train_step(batch["images"], batch["captions"]), "samples": len(batch["captions"])}

    def outputs_finite(self, batch: dict) -> bool:
        """Features, logit scale and bias of the batch's first few pairs (a SigLIP scale of exp(999) is inf while
        the parameter is finite)."""
        images = batch["images"][:OUTPUT_CHECK_SAMPLES].to(self.device)
        with self.autocast():
            out = self.model(images, **self._text_inputs(list(batch["captions"][:OUTPUT_CHECK_SAMPLES])))
        values = [out["image_features"], out["text_features"], out["logit_scale"]]
        values += [out["logit_bias"]] if out["logit_bias"] is not None else []
        return all(bool(torch.isfinite(torch.as_tensor(v)).all()) for v in values)

    def window_record(self, sums: dict[str, float]) -> tuple[dict, dict]:
        record = {"logit_scale": float(self.model.scale().detach())}
        if self.model.logit_bias is not None:
            record["logit_bias"] = float(self.model.logit_bias.detach())
        return record, {"scale": f"{record['logit_scale']:.1f}"}

    def train_step(self, images: torch.Tensor, captions: list[str]) -> float:
        images = images.to(self.device, non_blocking=True)
        text = self._text_inputs(captions)
        k = self.cfg.accum_steps
        if k == 1:
            with self.autocast():
                out = self.forward_model(images, **text)
            loss = self._loss(out)
            loss.backward()
        else:
            loss = self._grad_cache_step(images, text, k)
        self.apply_gradients()
        with torch.no_grad():
            # and a floor of 1 (ln 1 = 0), as OpenCLIP's: a learning rate too high drove the scale to 4e-18, where
            # the features get no gradient, and the run went on at the loss of chance (ln B) to its end, saved
            self.model.logit_scale.clamp_(min=0.0, max=self.model.cfg.max_logit_scale)
        return float(loss.detach())

    def _grad_cache_step(self, images, text: dict, k: int) -> torch.Tensor:
        key = next(iter(text))
        img_chunks, txt_chunks = images.chunk(k), text[key].chunk(k)
        # chunk() gives fewer than k where the batch is not a multiple (unreadable samples shrink it: 9 -> 3
        # chunks of 3 for k = 4); the last chunk, which syncs DDP and carries the logit scale, is the last there is
        k, sizes = len(img_chunks), [len(c) for c in img_chunks]
        rng_states, feats_i, feats_t = [], [], []
        with torch.no_grad():
            for xi, xt in zip(img_chunks, txt_chunks):
                rng_states.append(_rng_states(self.device))
                with self.autocast():
                    out = self.model(xi, **{key: xt})
                feats_i.append(out["image_features"].float())
                feats_t.append(out["text_features"].float())
        all_i = torch.cat(feats_i).requires_grad_(True)
        all_t = torch.cat(feats_t).requires_grad_(True)
        scale = self.model.scale().detach().float().requires_grad_(True)
        bias = self.model.logit_bias.detach().float().requires_grad_(True) if self.model.logit_bias is not None else None
        loss = contrastive_loss(self.model.cfg.loss, all_i, all_t, scale, bias)
        loss.backward()
        grads_i, grads_t = all_i.grad.split(sizes), all_t.grad.split(sizes)
        end_state = _rng_states(self.device)
        for j, (xi, xt) in enumerate(zip(img_chunks, txt_chunks)):
            _set_rng_states(rng_states[j], self.device)  # same patch-dropout draws as the cached pass
            sync = self.ddp.no_sync() if (self.ddp is not None and j < k - 1) else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    out = self.forward_model(xi, **{key: xt})
                surrogate = (out["image_features"].float() * grads_i[j]).sum() + (out["text_features"].float() * grads_t[j]).sum()
                if j == k - 1:  # the logit scale/bias gradients, routed through the forward once: the last,
                    # the one DDP syncs, which must use every parameter or the reduction never completes
                    surrogate = surrogate + out["logit_scale"].float() * scale.grad
                    if bias is not None and bias.grad is not None:  # (a CLIP-loss model's frozen bias has none)
                        surrogate = surrogate + out["logit_bias"].float() * bias.grad
                if surrogate.requires_grad:  # both towers locked: only the last chunk has a gradient (the scale's)
                    surrogate.backward()
        _set_rng_states(end_state, self.device)
        return loss.detach()

    # ----- evaluation ----------------------------------------------------------------------------
    # what a line during training says (the full set is in metrics.jsonl): `kizuna train` said nothing of its
    # evaluations until the final JSON, where `vit train` prints its validation accuracy
    _LINE_KEYS = (("zeroshot/top1", "zero-shot top-1"), ("retrieval/image_to_text_R@1", "image->text R@1"),
                  ("retrieval/text_to_image_R@1", "text->image R@1"), ("probe/shape", "probe shape"),
                  ("probe/colour", "colour"), ("probe/unseen_combos", "unseen"), ("probe/counting", "counting"))

    def evaluation_line(self, metrics: dict) -> str | None:
        said = [f"{name} {float(metrics[key]):.4f}" for key, name in self._LINE_KEYS
                if isinstance(metrics.get(key), (int, float))]
        return ", ".join(said) or None

    def evaluate(self) -> dict:
        cfg = self.cfg
        state = torch.get_rng_state()  # evaluation must not shift the training RNG stream
        self.model.eval()
        metrics = {}
        try:
            if cfg.eval_zeroshot == "synthetic" or (cfg.data == "synthetic" and not cfg.eval_zeroshot):
                if self.dist.is_main:
                    from .evaluation import synthetic_probe_metrics

                    metrics.update(synthetic_probe_metrics(self.model, self.tokenizer,
                                                          n_per_task=cfg.eval_max_samples or 200,
                                                          progress=cfg.progress))
            zeroshot = "" if cfg.eval_zeroshot == "synthetic" else cfg.eval_zeroshot
            if zeroshot or cfg.eval_retrieval:  # beside the probes too (it was skipped on synthetic data)
                from kizuna.eval.training import evaluate_for_training

                metrics.update(evaluate_for_training(
                    self.model, self.tokenizer, kizuna.get_preprocess(self.model),
                    zeroshot or None, cfg.eval_retrieval or None, max_samples=cfg.eval_max_samples,
                    split=cfg.eval_split or None, progress=cfg.progress and self.dist.is_main,
                    datasets=self.eval_datasets,  # indexed once for this run
                ))
        finally:
            self._set_training_modes()
            torch.set_rng_state(state)
        return metrics

    def _set_training_modes(self):
        """model.train() undoes eval() on locked towers; put them back."""
        self.model.train()
        if self.cfg.lock_image and self.cfg.lock_image_unlocked_blocks <= 0:
            self.model.visual.eval()
        if self.cfg.lock_text and self.model.cfg.text.kind == "minilm":
            self.model.text.encoder.eval()
        elif self.cfg.lock_text and self.cfg.lock_text_unlocked_blocks <= 0:
            self.model.text.eval()

    # ----- checkpoints -------------------------------------------------------------------------
    def extra_train_state(self) -> dict:
        if not (self.cached_text and self.text_cache):
            return {}
        # A caption's cached embedding depends (to float rounding) on the batch it was first encoded in;
        # re-encoded after a resume in other batches, it moved the run off its uninterrupted path.
        captions = list(self.text_cache)
        return {"text_cache": {"captions": captions,
                               "embeddings": torch.stack([self.text_cache[c] for c in captions])}}

    def restore_extra_train_state(self, state: dict) -> None:
        cache = state.get("text_cache")
        if self.cached_text and cache:
            self.text_cache = dict(zip(cache["captions"], cache["embeddings"].unbind(0)))


def _clip_or_error(model, source: str) -> ClipModel:
    if not isinstance(model, ClipModel):
        raise ValueError(f"{source} is a {type(model).__name__} (an image classifier, no text tower): "
                         "`kizuna train` trains image-text models; train or resume a ViT with `kizuna vit train`")
    return model


def _rng_states(device: torch.device) -> tuple:
    """The generators a forward pass may draw from (patch dropout): the CPU's, and on a GPU the device's own
    (torch.rand on a CUDA tensor draws there; restoring only the CPU's gave GradCache's second pass other
    patch masks than its first, and wrong gradients)."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_states(states: tuple, device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def refuse_settings_a_checkpoint_fixes(cfg: TrainConfig, named: frozenset[str] | None) -> None:
    """Training from a checkpoint given as --model keeps its towers, tokenizer and loss: flags asking for
    others were ignored without a word. ``named`` as for a resume (None: a non-default value counts)."""
    defaults = TrainConfig()
    if named is None:
        named = frozenset(CHECKPOINT_FIXED)
    # at their defaults they ask for the model's own (--loss model, --context-length 0, ...): what a checkpoint does
    # (a script spelling out its defaults was refused as "--loss would be ignored" once given a checkpoint)
    given = [f"--{f.replace('_', '-')}" for f in CHECKPOINT_FIXED if f in named
             and getattr(cfg, f) != getattr(defaults, f) and not (f == "tokenizer" and cfg.tokenizer == "")]
    if given:
        raise ValueError(f"--model {cfg.model} is a checkpoint: it brings its own towers, tokenizer and loss, so "
                         f"{', '.join(given)} would be ignored. Drop the flag(s), or start from a preset name")


def scenes_at_model_size(cfg: TrainConfig, model: ClipModel, named: frozenset[str] | None) -> TrainConfig:
    """On --data synthetic the scenes are drawn at the model's input size (``model_config`` sets a preset's from
    --synthetic-image-size); a square checkpoint given as --model has its own size (a non-square one's scenes
    are drawn square, at --synthetic-image-size, and resized). A checkpoint's scenes were drawn at the default
    64 px and resized to its size (a 32-px model trained on other scenes than its probes drew), and
    train_config.json recorded 64. ``named`` as for :func:`refuse_settings_a_checkpoint_fixes`."""
    size = model.cfg.vision.image_size
    side = size if isinstance(size, int) else size[0] if len(set(size)) == 1 else None  # the scenes are square
    if cfg.data != "synthetic" or side is None or side == cfg.synthetic_image_size:
        return cfg
    # typed as a flag, not brought by a --config file: an earlier run's train_config.json records the size its
    # scenes were drawn at (64 before), and the demo's recipe its own 48; those give way to the checkpoint's
    typed = ("synthetic_image_size" in getattr(named, "typed", named) if named is not None
             else cfg.synthetic_image_size != TrainConfig().synthetic_image_size)
    if typed:
        raise ValueError(f"--synthetic-image-size {cfg.synthetic_image_size}: --model {cfg.model} is a checkpoint "
                         f"of {side}-px input, and on --data synthetic the scenes are drawn at the model's input "
                         "size; drop the flag")
    return dataclasses.replace(cfg, synthetic_image_size=side)


def check_evaluation_data(cfg: TrainConfig, datasets: dict | None = None) -> None:
    """--eval-zeroshot and --eval-retrieval (with --eval-split) must resolve before any training: a typo was
    found at the run's first evaluation, at its end by default, before its final checkpoint, and the whole run
    was lost. Indexed here as the evaluation reads them, into ``datasets`` (the run's: no image is decoded,
    and the evaluation does not index them again)."""
    from kizuna.eval.datasets import with_caller_flags
    from kizuna.eval.training import _dataset

    zeroshot = "" if cfg.eval_zeroshot == "synthetic" else cfg.eval_zeroshot
    for flag, folder, task in (("--eval-zeroshot", zeroshot, "classification"),
                               ("--eval-retrieval", cfg.eval_retrieval, "retrieval")):
        if not folder:
            continue
        try:
            ds = _dataset(folder, task, cfg.eval_split or None, cfg.eval_max_samples, datasets)
            if task == "classification" and len(ds.classnames) < 2:  # refused by the evaluation, at the run's end
                raise ValueError(f"{len(ds.classnames)} class ({', '.join(ds.classnames)}): zero-shot needs at "
                                 "least two to choose between (a classnames.txt beside the split names them all)")
        except (ValueError, OSError) as e:  # DatasetError is a ValueError; a missing folder FileNotFoundError
            split = f" --eval-split {cfg.eval_split}" if cfg.eval_split else ""
            # on a resume the folder comes from the run's settings: dropping the flag would keep it
            how = (f"pass {flag} with the folder's new place, or {flag} \"\" to evaluate without it" if cfg.resume
                   else "fix the flag (or drop it)")
            raise ValueError(f"{flag} {folder}{split}: {with_caller_flags(e, '--eval-split', in_training=True)}. "
                             f"Before training, {how}: the run's evaluations would fail") from None
        if task == "classification" and cfg.best_metric == "zeroshot/top5" and len(ds.classnames) <= 5:
            # top-5 is given only past 5 classes: the run ended without best/, warned at its first evaluation
            raise ValueError(f"--best-metric zeroshot/top5: {folder} has {len(ds.classnames)} classes; top-5 "
                             "accuracy says something only past 5 (below, it is not given; at 5, always 100%): "
                             "pick best/ by zeroshot/top1 or zeroshot/mean_per_class_recall")
        recall = re.fullmatch(r"retrieval/(image_to_text|text_to_image)_R@(\d+)", cfg.best_metric)
        if task == "retrieval" and recall:
            # R@K of K candidates or fewer is 100% or not given: best/ stayed at the first evaluation, unsaid
            direction, k = recall.group(1), int(recall.group(2))
            candidates, what = ((sum(len(c) for c in ds.captions), "captions") if direction == "image_to_text"
                                else (len(ds), "images"))
            if candidates <= k:
                raise ValueError(f"--best-metric {cfg.best_metric}: {folder} has {candidates} {what} to retrieve; "
                                 f"R@{k} says something only past {k} (below, it is not given; at {k}, always 100%): "
                                 f"pick best/ by retrieval/{direction}_R@1 or a larger --eval-max-samples")


def check_best_metric(cfg: TrainConfig) -> None:
    """--best-metric names a metric this run's evaluations give, before any training: a typo was a warning at
    the first evaluation (the run's end by default) and the run ended without best/; with no evaluation at all,
    not even that."""
    if not getattr(cfg, "best_metric", ""):
        return
    from kizuna.eval.training import _MAIN_KEYS

    gives = {"probe": cfg.eval_zeroshot == "synthetic" or (cfg.data == "synthetic" and not cfg.eval_zeroshot),
             "zeroshot": cfg.eval_zeroshot not in ("", "synthetic"), "retrieval": bool(cfg.eval_retrieval)}
    names = {"zeroshot": {*_MAIN_KEYS["zeroshot"], "zeroshot/top5"}, "retrieval": set(_MAIN_KEYS["retrieval"])}
    source = cfg.best_metric.split("/")[0]
    evaluated = [f"{k}/..." for k, on in gives.items() if on]
    if not evaluated:
        # (a probe metric on files: `--config demo --data DIR` carried the demo's probe/unseen_combos)
        hint = "--eval-zeroshot synthetic (the probes' scenes)" if source == "probe" else (
            "--eval-zeroshot DIR or --eval-retrieval DIR")
        raise ValueError(f"--best-metric {cfg.best_metric}: this run evaluates nothing to pick best/ by; pass "
                         f"{hint} (or drop --best-metric, or give --best-metric '' where a config set it)")
    if not gives.get(source):
        raise ValueError(f"--best-metric {cfg.best_metric}: this run's evaluations give {', '.join(evaluated)} "
                         "metrics" + (f" (--eval-{source} would give {source}/...)" if source in names else ""))
    if source in names and cfg.best_metric not in names[source]:
        raise ValueError(f"--best-metric {cfg.best_metric}: the {source} evaluation gives "
                         f"{', '.join(sorted(names[source]))}")


def warn_if_best_is_picked_on_test(cfg: TrainConfig) -> None:
    """best/ chosen by a metric measured on the test split is tuned on the test set: its test numbers are
    no longer a held-out estimate. Said once at the start, with the way out."""
    from kizuna.eval.datasets import DatasetError, find_split, is_split_folder

    if not cfg.best_metric:
        return
    # only the folder the metric is measured on (a probe/ metric is on neither)
    folder = {"zeroshot": cfg.eval_zeroshot, "retrieval": cfg.eval_retrieval}.get(cfg.best_metric.split("/")[0])
    if not folder or folder == "synthetic":
        return
    path = Path(folder).expanduser()
    try:
        # also where --eval-split names it (test, TEST): any split given was taken for a held-out one
        if cfg.eval_split:
            split = find_split(path.parent if is_split_folder(path) else path, cfg.eval_split)[1]
        else:
            split = "test" if path.name.casefold() == "test" else find_split(path, None)[1]
    except (DatasetError, OSError):
        return
    if (split or "").casefold() == "test":
        warnings.warn(f"--best-metric {cfg.best_metric} picks best/ on the test split of {folder}, so best/'s "
                      "test numbers are no longer held out; pass --eval-split val (where the data has one)",
                      stacklevel=2)


def train(cfg: TrainConfig, named: frozenset[str] | None = None) -> dict:
    return ContrastiveTrainer(cfg, named).train()
