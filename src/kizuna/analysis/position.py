"""Position-embedding analysis: cosine-similarity maps (ViT paper, Fig. 7 centre) and the
2-D sin-cos embedding used by MAE / big_vision.

Token layout: ``num_prefix`` non-patch tokens (class token, registers) first, then the
patches in row-major order, patch ``(r, c)`` at index ``num_prefix + r * w + c``.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "position_similarity",
    "row_column_score",
    "sincos_1d_position_embedding",
    "sincos_2d_position_embedding",
]


def _as_grid(grid: int | Sequence[int]) -> tuple[int, int]:
    """(rows, columns) of a patch grid given as one side or a pair; a side below 1 is a ValueError (-2 was
    torch's "invalid shape dimension")."""
    if isinstance(grid, bool) or (not isinstance(grid, numbers.Integral) and any(isinstance(g, bool) for g in grid)):
        raise TypeError(f"grid must be a side or a (rows, columns) pair of whole numbers, got {grid!r}")
    # (a numpy integer, as resample_pos_embed takes it, was "'numpy.int64' object is not iterable")
    h, w = (int(grid), int(grid)) if isinstance(grid, numbers.Integral) else (int(g) for g in grid)
    if h <= 0 or w <= 0:
        raise ValueError(f"grid must be positive, got {(h, w)}")
    return h, w


def position_similarity(
    pos_embed: Tensor,
    grid: int | Sequence[int],
    num_prefix: int = 1,
) -> Tensor:
    """Cosine similarity between the position embeddings of all patch pairs.

    Args:
        pos_embed: ``[T, D]`` or ``[1, T, D]`` with ``T = num_prefix + h * w``.
        grid: patch grid ``(h, w)``.
        num_prefix: leading non-patch rows to drop (class token etc.).

    Returns:
        ``[h * w, h, w]``: entry ``[i, r, c]`` is the similarity of patch ``i`` (row-major)
        with the patch at ``(r, c)``. Diagonal (``i`` with itself) is 1.
    """
    h, w = _as_grid(grid)
    pe = torch.as_tensor(pos_embed).detach()
    if pe.dim() == 3:
        if pe.shape[0] != 1:
            raise ValueError(f"batched pos_embed must have batch size 1, got {tuple(pe.shape)}")
        pe = pe[0]
    if pe.dim() != 2:
        raise ValueError(f"pos_embed must be [T, D] or [1, T, D], got {tuple(pe.shape)}")
    if pe.shape[0] != num_prefix + h * w:
        raise ValueError(
            f"pos_embed has {pe.shape[0]} rows, expected num_prefix={num_prefix} + {h}x{w}"
            f" = {num_prefix + h * w}"
        )
    p = F.normalize(pe[num_prefix:].double(), dim=-1)
    sim = (p @ p.T).float()
    return sim.reshape(h * w, h, w)


def row_column_score(sim: Tensor, grid: int | Sequence[int]) -> dict[str, float]:
    """Summarise the row/column structure of a patch-similarity matrix.

    Args:
        sim: ``[N, h, w]`` (from :func:`position_similarity`) or ``[N, N]``, ``N = h * w``.
        grid: patch grid ``(h, w)``.

    Returns:
        dict of floats:

        * ``same_row``: mean similarity over ordered pairs in the same row (self excluded);
        * ``same_col``: same for pairs in the same column;
        * ``other``: mean over pairs sharing neither row nor column;
        * ``line``: mean over pairs sharing a row or a column (self excluded);
        * ``ratio``: ``(1 + line) / (1 + other)``, the ratio of the mean similarities after
          shifting cosine similarity from ``[-1, 1]`` to ``[0, 2]`` (so it stays finite when
          ``other`` is near 0). ``> 1`` means patches in the same row/column are more
          alike than the rest; ``≈ 1`` means neither rows/columns nor locality: pairs sharing a
          line are closer on average than the others, so an embedding whose similarity falls
          with straight-line distance alone scores above 1 too: on an 8 x 8 grid from about 1.1
          (exponential falloff) through 1.29 (linear) to over 2 (a narrow Gaussian);
        * ``equal_distance_line`` / ``equal_distance_other``: mean similarity of pairs sharing a
          row or column / sharing neither, at the same straight-line distance (offsets (0, 5) and
          (3, 4), (0, 10) and (6, 8), ...: whole distances that both kinds reach in the grid),
          averaged over those distances; ``equal_distance_excess``, their difference: rows and
          columns with locality taken out (``≈ 0`` for similarity by distance alone, ``> 0`` for
          row/column structure). ``nan`` on grids too small for such pairs (fewer than 6 patches
          on the long side or 4 on the short: 5 x 5 has none, 4 x 6 has (0, 5) and (3, 4)).

        A key is ``nan`` when the grid has no such pair (e.g. ``same_row`` for ``w == 1``).
    """
    h, w = _as_grid(grid)
    n = h * w
    s = torch.as_tensor(sim).detach().double()
    if s.shape not in ((n, h, w), (n, n)):
        raise ValueError(f"sim must be [{n}, {h}, {w}] or [{n}, {n}], got {tuple(s.shape)}")
    s = s.reshape(n, n)
    r = torch.arange(h).repeat_interleave(w)
    c = torch.arange(w).repeat(h)
    same_r = r[:, None] == r[None, :]
    same_c = c[:, None] == c[None, :]
    eye = torch.eye(n, dtype=torch.bool)

    def mean(mask: Tensor) -> float:
        return float(s[mask].mean()) if bool(mask.any()) else float("nan")

    out = {
        "same_row": mean(same_r & ~eye),
        "same_col": mean(same_c & ~eye),
        "other": mean(~same_r & ~same_c),
        "line": mean((same_r | same_c) & ~eye),
    }
    out["ratio"] = (1.0 + out["line"]) / (1.0 + out["other"])
    # the same contrast at equal straight-line distance (the ratio above also counts locality: see the docstring)
    dr, dc = (r[:, None] - r[None, :]).abs(), (c[:, None] - c[None, :]).abs()
    squared, on_line = dr * dr + dc * dc, (dr == 0) | (dc == 0)
    lines, others = [], []
    for d in range(1, max(h, w)):
        at = squared == d * d
        if bool((at & on_line).any()) and bool((at & ~on_line).any()):
            lines.append(mean(at & on_line))
            others.append(mean(at & ~on_line))
    out["equal_distance_line"] = sum(lines) / len(lines) if lines else float("nan")
    out["equal_distance_other"] = sum(others) / len(others) if others else float("nan")
    out["equal_distance_excess"] = out["equal_distance_line"] - out["equal_distance_other"]
    return out


def sincos_1d_position_embedding(
    positions: Tensor,
    dim: int,
    temperature: float = 10000.0,
) -> Tensor:
    """1-D sin-cos embedding ``[len(positions), dim]``: ``[sin(p·ω), cos(p·ω)]`` with
    ``ω_i = temperature^(-i / (dim/2))``, ``i = 0 .. dim/2 - 1`` (MAE's
    ``get_1d_sincos_pos_embed_from_grid``)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / temperature**omega
    out = torch.as_tensor(positions, dtype=torch.float64).reshape(-1, 1) * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d_position_embedding(
    grid: int | Sequence[int],
    dim: int,
    num_prefix: int = 0,
    temperature: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fixed 2-D sin-cos position embedding, ``[num_prefix + h * w, dim]``.

    Follows MAE's ``get_2d_sincos_pos_embed``: the first ``dim/2`` channels are the 1-D
    embedding of the patch column, the last ``dim/2`` of the patch row (each
    ``[sin, cos]`` over ``dim/4`` frequencies). big_vision's ``posemb_sincos_2d`` is the same
    construction up to channel order and frequency spacing. ``num_prefix`` zero rows are
    prepended for the class token etc. (as MAE does with ``cls_token=True``).
    """
    h, w = _as_grid(grid)
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float64).repeat(h)
    pe = torch.cat(
        [
            sincos_1d_position_embedding(cols, dim // 2, temperature),
            sincos_1d_position_embedding(rows, dim // 2, temperature),
        ],
        dim=1,
    )
    if num_prefix:
        pe = torch.cat([torch.zeros(num_prefix, dim, dtype=pe.dtype), pe], dim=0)
    return pe.to(dtype)
