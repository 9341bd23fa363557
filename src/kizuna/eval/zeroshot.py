"""Zero-shot classification (CLIP paper, Sec. 3.1.4).

A class's weight is the mean of its L2-normalised text embeddings over the prompt templates,
renormalised; an image's scores are its normalised embedding against those weights.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from kizuna.models.layers import autocast_off

from .encode import check_finite, eval_mode, is_count

Template = str | Callable[[str], str]


def fill_template(template: Template, classname: str) -> str:
    if callable(template):
        return template(classname)
    if "{c}" in template or "{}" in template or "{0}" in template or _has_a_field(template):
        # (any field: "a {c!r}" was told it had no {c}; _format_class names what it cannot fill)
        return _format_class(template, classname)
    raise ValueError(f"template {template!r} has no '{{c}}' placeholder for the class name")


def _has_a_field(template: str) -> bool:
    import string

    try:
        return any(field is not None for _, field, _, _ in string.Formatter().parse(template))
    except ValueError:  # unbalanced braces: _format_class says so
        return True


def _format_class(template: str, classname: str) -> str:
    """``template.format(c=classname)`` (CLIP_benchmark's templates) or ``template.format(classname)`` for what a
    template holds: {c}, or {} (or {0}), for the class name and doubled braces, refusing the rest of str.format:
    a format spec or an attribute ran as written ("{{}} {0:>1000000000}", from a template file, took 87 s and
    2.8 GB per class; "{0.__class__}" read the name's attributes), "a {{}}" had no place for the class name at
    all, and a {c} template kept its doubled braces ("a {c} {{x}}" is "a cat {x}" in CLIP_benchmark, and was
    "a cat {{x}}" here, unlike the same template written with {})."""
    import string

    def refused(why: str):
        return ValueError(f"template {template!r} cannot be filled ({why}): write {{c}} (or {{}}) for the class "
                          "name and double any other braces ({{ }})")

    pieces, seen = [], set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:  # a single '{' or '}'
        raise refused(f"ValueError: {e}") from None
    named = any(field == "c" for _, field, _, _ in parsed)  # {c} names the class; {} and {0} are then refused
    for literal, field, spec, conversion in parsed:
        pieces.append(literal)
        if field is None:
            continue
        if field not in (("c",) if named else ("", "0")) or spec or conversion:  # "a {} in {style}": a KeyError
            whole = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise refused(f"{whole} is not a place for the class name")
        if field == "" and "{}" in seen:  # "a {} and {}": str.format wants two values (write {0} for one twice);
            # "{c}" may come twice, as str.format(c=...) allows
            raise refused("two {}, and one class name")
        seen.add("{" + field + "}")
        if seen == {"{}", "{0}"}:  # str.format: "cannot switch from automatic field numbering to manual"
            raise refused("both {} and {0}")
        pieces.append(classname)
    if not seen:
        raise refused("no {} outside doubled braces")
    return "".join(pieces)


def text_list(value, what: str) -> list:
    """``value`` (class names, templates, labels, texts: any sequence, a numpy array or a pandas Series) as a list; a
    single string is refused, not iterated: "cat" was three classes, 'c', 'a' and 't', and a template string failed
    as "template 'a' has no '{c}' placeholder"."""
    if isinstance(value, str):
        raise TypeError(f"{what} must be a list of strings, got the string {value[:60]!r}; wrap it: [{value[:30]!r}]")
    return list(value) if value is not None else []


@torch.no_grad()  # not inference_mode: a host trains on these (a zero-shot head's init)
def encode_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 256, device=None) -> torch.Tensor:
    """L2-normalised text embeddings [N, D], in batches."""
    texts = text_list(texts, "texts")
    device = device or next(model.parameters()).device
    out = []
    with eval_mode(model):  # the same weights as class_embeddings, whatever mode the model was left in
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[i : i + batch_size])).to(device)
            out.append(model.encode_text(tokens, normalize=True).float())
    if not out:  # [0, D], as documented (it was [0]): a host stacking or concatenating rows keeps its shape
        return torch.empty(0, getattr(getattr(getattr(model, "module", model), "cfg", None), "embed_dim", 0))
    return torch.cat(out)


def same_prompts(tokenizer, classnames: Sequence[str], templates: Sequence[Template] = ("a photo of a {c}.",)
                 ) -> list[list[int]]:
    """Groups (class indices, in order) of class names whose every filled prompt tokenizes to the same ids: the
    model sees one text, and the classes split one probability. CLIP's BPE lower-cases and collapses
    whitespace ("Cat" and "cat", "a cat" and "a  cat"); a name cut at the context length is cut alike. A check
    before any encoding (tokenizing only); exact repeats are in groups too."""
    classnames, templates = text_list(classnames, "class names"), text_list(templates, "templates")
    if not classnames or not templates:
        return []
    seen: dict[bytes, list[int]] = {}
    # some thousand prompts at a time: all of ImageNet-21k's x 80 templates at once took 5.4 GB (and 43 s)
    per_chunk = max(1, PROMPTS_A_CHUNK // len(templates))
    for start in range(0, len(classnames), per_chunk):
        names = classnames[start:start + per_chunk]
        ids = tokenizer([fill_template(t, c) for c in names for t in templates])
        if not isinstance(ids, torch.Tensor):  # a tokenizer of another kind: not checked
            return []
        for k, row in enumerate(ids.reshape(len(names), -1).cpu().numpy(), start):
            seen.setdefault(row.tobytes(), []).append(k)
    return [group for group in seen.values() if len(group) > 1]


PROMPTS_A_CHUNK = 8192  # prompts tokenized at once where only their ids' digest or groups are kept


@torch.no_grad()  # not inference_mode: a host trains on these (a zero-shot head's init)
def build_classifier(
    model, tokenizer, classnames: Sequence[str], templates: Sequence[Template] = ("a photo of a {c}.",),
    batch_size: int = 256, device=None,
) -> torch.Tensor:
    """Class weights [C, D]: normalised mean over templates of normalised text embeddings."""
    # a numpy array of names (np.unique(df.label)) failed in `not classnames` with numpy's "truth value ... ambiguous"
    classnames, templates = text_list(classnames, "class names"), text_list(templates, "templates")
    if not classnames:
        raise ValueError("no class names given")
    if not templates:
        raise ValueError("no prompt templates given")
    texts = [fill_template(t, c) for c in classnames for t in templates]
    emb = encode_texts(model, tokenizer, texts, batch_size, device)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


class ZeroShotClassifier:
    """Scores images against class weights; probabilities as the model was trained (softmax for CLIP,
    per-class sigmoid for SigLIP)."""

    def __init__(self, model, tokenizer, classnames: Sequence[str], templates: Sequence[Template] = ("a photo of a {c}.",),
                 refuse_non_finite: bool = False):
        """``refuse_non_finite``: raise :class:`~kizuna.eval.encode.NonFiniteFeatures` where the class weights or
        an image's features hold NaN or inf, as ``kizuna eval`` does (the CLI commands ask for it: NaN scores
        were printed as "nan%"); off, they pass through (the demo's report of a diverged model draws them)."""
        self.model = model
        # listed once: a generator of names was used up here and build_classifier then had "no class names given"
        self.classnames = text_list(classnames, "class names")
        self.refuse_non_finite = refuse_non_finite
        self.weights = build_classifier(model, tokenizer, self.classnames, templates)
        if refuse_non_finite:
            check_finite(self.weights, None, "labels")

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor):  # (anything else, a PIL image say, is encode_image's to explain)
            images = images.to(self.weights.device)
        with eval_mode(self.model):
            img = self.model.encode_image(images, normalize=True).float()
        if self.refuse_non_finite:
            check_finite(img, None, "images")
        with autocast_off(img.device.type):  # float32 logits under a caller's autocast too
            return self.model.scale().float() * img @ self.weights.float().T + self.model.bias()

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class probabilities: a sigmoid each for SigLIP, a softmax over the classes otherwise. Rank by
        :meth:`logits` (as :meth:`topk` does), not by these: they saturate to ties (1.0 or 0.0)."""
        return self.probabilities(self.logits(images))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.model.cfg.loss == "siglip" else logits.softmax(dim=-1)

    def topk(self, images: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        if not is_count(k):  # -1 sliced off the last class
            raise ValueError(f"k must be a whole number >= 1 (the classes to return per image), got {k!r}")
        logits = self.logits(images)
        probs = self.probabilities(logits)
        # ranked by the logits, not the probabilities: a SigLIP sigmoid is exactly 1.0 in float32 above a logit of
        # about 17 (a trained model's scale is over 100), so every such class tied at 1.0 and came out in label
        # order. Ties to the lower class index, as rank_classes (Tensor.topk orders tied values arbitrarily).
        from .classification import rank_classes  # (it imports this module)

        indices = rank_classes(logits, k)
        values = probs.gather(-1, indices)
        return [[(self.classnames[i], float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values.tolist(), indices.tolist())]
