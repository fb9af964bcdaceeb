"""Preprocessing and augmentation on batched tensors. Image and mask move together."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a float (N, C, H, W) tensor; a no-op when the size matches."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


def resize_uint8(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, C, H, W) to (N, C, size, size), rounding back to uint8."""
    if arr.shape[-2:] == (size, size):
        return arr
    out = resize(torch.from_numpy(arr).float(), size)
    return out.round_().clamp_(0, 255).to(torch.uint8).numpy()


def scale_intensity(x: torch.Tensor, mode: str = "fixed") -> torch.Tensor:
    """uint8-valued (N, C, H, W) -> float32 in [0, 1].

    `fixed` divides by 255. `percentile` divides each slice's channel by its own 99th
    percentile (then clips to 1), which evens out contrast between scanners. `volume` divides
    by 255: its slices were already scaled per volume by `volume_normalize`.
    """
    x = x.float() / 255.0
    if mode == "percentile":
        n, c = x.shape[:2]
        hi = upper_quantile(x.reshape(n * c, -1), 0.99).clamp_min(1 / 255)
        x = (x / hi.reshape(n, c, 1, 1)).clamp_(0, 1)
    return x


def volume_normalize(images: np.ndarray, q: float = 0.99) -> np.ndarray:
    """uint8 slices (S, C, H, W) of one volume -> uint8, each channel stretched so that the
    `q` quantile of the volume's non-zero voxels becomes 255 (brighter ones clip).

    One scale for the whole volume keeps every slice's contrast the same, where a per-slice
    scale changes with how much tumor or bone a slice holds. Given unrelated single slices,
    pass them one at a time.
    """
    out = np.empty_like(images)
    for c in range(images.shape[1]):
        ch = images[:, c]
        nz = ch[ch > 0]
        hi = float(np.quantile(nz, q)) if nz.size else 255.0
        scaled = ch.astype(np.float32) * (255.0 / max(hi, 1.0))
        out[:, c] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


def upper_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """`torch.quantile(x, q, dim=1)` (linear interpolation) for q >= 0.5 of a 2D tensor, from a
    partial top-k instead of a full sort: about 10x faster on 256x256 slices, and it exports
    to ONNX as one TopK with a small k."""
    n = x.shape[1]
    pos = q * (n - 1)
    lo = math.floor(pos)
    k = n - lo  # the values at sorted positions lo and lo + 1 are the last two of the top k
    top = torch.topk(x, k, dim=1, largest=True, sorted=True).values
    v_lo = top[:, k - 1]
    v_hi = top[:, max(k - 2, 0)]
    return torch.lerp(v_lo, v_hi, pos - lo)


def preprocess(images: torch.Tensor, size: int, intensity: str = "fixed") -> torch.Tensor:
    """Raw uint8 slices (N, C, H, W) of any size -> the model's float input at `size`."""
    return resize(scale_intensity(images, intensity), size)


def augment(
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    rotate_deg: float = 15.0,
    shift: float = 0.1,
    scale: float = 0.1,
    intensity: float = 0.1,
    gamma: float = 0.4,
    channel_groups: list[list[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random left-right flip, rotation, shift, zoom, brightness/contrast and gamma, per sample.

    Gamma is drawn log-uniformly in [1/(1+gamma), 1+gamma] and applied to the brain pixels
    (x ** gamma keeps [0, 1]); it mimics the contrast differences between scanners.
    `channel_groups` (e.g. `[[0], [1, 3, 4], [2]]`: each MRI sequence with the channels that copy
    it) draws brightness, contrast and gamma per group instead of once per sample, since each
    sequence is scaled on its own; every channel must be in exactly one group.

    x: float (N, C, H, W) in [0, 1]; y: float (N, 1, H, W) in {0, 1}. One affine grid
    moves both, so they stay aligned; the mask is re-binarised at 0.5.
    """
    n, c = x.shape[:2]
    if channel_groups is not None:
        flat = sorted(ch for group in channel_groups for ch in group)
        if flat != list(range(c)):
            raise ValueError(f"channel_groups {channel_groups} must hold each of the {c} channels once")

    def uniform(lo: float, hi: float, *groups: int) -> torch.Tensor:
        return torch.rand(n, *groups, generator=generator) * (hi - lo) + lo

    def on_device(t: torch.Tensor) -> torch.Tensor:
        return t.to(x.device).view(n, 1, 1, 1)

    def per_channel(lo: float, hi: float) -> torch.Tensor:
        """One draw per sample (n, 1, 1, 1), or per sample and channel group (n, C, 1, 1)."""
        if channel_groups is None:
            return on_device(uniform(lo, hi))
        drawn = uniform(lo, hi, len(channel_groups))
        return drawn[:, group_index(channel_groups, c)].to(x.device).view(n, c, 1, 1)

    angle = uniform(-rotate_deg, rotate_deg) * math.pi / 180
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    zoom = uniform(1 - scale, 1 + scale)
    tx, ty = uniform(-2 * shift, 2 * shift), uniform(-2 * shift, 2 * shift)  # grid units span 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = (y > 0.5).float()
    if intensity > 0:
        gain = per_channel(1 - intensity, 1 + intensity)
        bias = per_channel(-intensity / 2, intensity / 2)
        brain = x > 0
        x = torch.where(brain, (x * gain + bias).clamp(0, 1), x)
    if gamma > 0:
        g = torch.exp(per_channel(-math.log1p(gamma), math.log1p(gamma)))
        x = torch.where(x > 0, x.clamp_min(1e-6) ** g, x)
    return x, y


def group_index(channel_groups: list[list[int]] | None, c: int) -> torch.Tensor:
    """For each of `c` channels, the index of its group (all 0 without groups): `drawn[:, index]` spreads
    one draw per group to the channels."""
    index = torch.zeros(c, dtype=torch.long)
    for g, group in enumerate(channel_groups or []):
        index[group] = g
    return index


def sequence_groups(own: int, flair: int, context: int = 0) -> list[list[int]]:
    """Channel groups for `augment`: each of a slice's `own` sequences on its own, with the 2.5D
    context channels (the FLAIR of neighbouring slices) in FLAIR's group."""
    groups = [[ch] for ch in range(own)]
    groups[flair] += list(range(own, own + 2 * context))
    return groups


def missing_sequences(x: torch.Tensor, generator: torch.Generator, p: float, flair: int = 1) -> torch.Tensor:
    """Show a share `p` of the slices (N, C, H, W) as if pre- or post-contrast T1, or both, were
    missing: their channels 0 and/or 2 become a copy of FLAIR (`flair`), as the LGG dataset fills
    a sequence a patient lacks. The three patterns are equally likely; later channels (2.5D
    context) are left as they are."""
    n = x.shape[0]
    chosen = torch.rand(n, generator=generator) < p
    pattern = torch.randint(0, 3, (n,), generator=generator)  # 0: no pre-T1, 1: no post-T1, 2: neither
    others = [c for c in range(3) if c != flair]
    out = x.clone()
    for c, missing in zip(others, (pattern != 1, pattern != 0)):
        rows = (chosen & missing).to(x.device).view(n, 1, 1)
        out[:, c] = torch.where(rows, x[:, flair], x[:, c])
    return out


def shuffle_context(
    x: torch.Tensor, own: int, flair: int, generator: torch.Generator, drop: float = 0.1, swap: float = 0.5
) -> torch.Tensor:
    """Augment 2.5D input (N, own + 2k, H, W): per sample, swap the slices below with those
    above (`swap`: the slice order of a user's volume is unknown), or replace all
    neighbours by the slice's own FLAIR (`drop`: a single slice is predicted that way)."""
    k = (x.shape[1] - own) // 2
    if k == 0:
        return x
    n = x.shape[0]
    below, above = x[:, own : own + k], x[:, own + k :]
    swapped = torch.cat([above.flip(1), below.flip(1)], 1)
    ctx = torch.where((torch.rand(n, generator=generator) < swap).view(n, 1, 1, 1).to(x.device), swapped, x[:, own:])
    alone = x[:, flair : flair + 1].expand(-1, 2 * k, -1, -1)
    ctx = torch.where((torch.rand(n, generator=generator) < drop).view(n, 1, 1, 1).to(x.device), alone, ctx)
    return torch.cat([x[:, :own], ctx], 1)


def dim_lesions(
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    p: float,
    factor: tuple[float, float] = (0.3, 0.9),
    grid: int = 6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Darken a random part of the tumor in a fraction `p` of the slices with tumor.

    Targets the misses of the shipped model: cystic or dark parts of a tumor are labelled
    tumor but look unlike the bright FLAIR signal most training tumors show. The part is a
    smooth random blob (noise on a `grid` x `grid` lattice, upsampled) inside the mask,
    softened at its edge; each channel is scaled there by its own factor in `factor`. A small
    tumor may lie outside the blob and stay as it is. The mask is unchanged.
    """
    n, c, h, w = x.shape
    chosen = (torch.rand(n, generator=generator) < p).to(x.device) & (y.flatten(1).amax(1) > 0)
    noise = torch.rand(n, 1, grid, grid, generator=generator)
    cut = torch.rand(n, 1, 1, 1, generator=generator) * 0.4 + 0.3
    scale = torch.rand(n, c, 1, 1, generator=generator) * (factor[1] - factor[0]) + factor[0]
    noise, cut, scale = noise.to(x.device), cut.to(x.device), scale.to(x.device)  # upsample where x is
    blob = torch.sigmoid((F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False) - cut) / 0.05)
    inside = F.avg_pool2d(y, 5, stride=1, padding=2, count_include_pad=False)
    weight = blob * inside * chosen.view(n, 1, 1, 1)
    return x * (1 - weight * (1 - scale)), y


@lru_cache(maxsize=8)
def legendre_basis(h: int, w: int, degree: int = 3) -> torch.Tensor:
    """Products P_i(row) * P_j(col) of Legendre polynomials with 1 <= i + j <= `degree`, on a grid
    spanning [-1, 1] each way: (K, h, w). The constant term is left out (it is a brightness change).
    Cached: every training batch of one size uses the same basis (do not modify the result)."""
    rows, cols = torch.linspace(-1, 1, h, dtype=torch.float64), torch.linspace(-1, 1, w, dtype=torch.float64)

    def legendre(t: torch.Tensor) -> list[torch.Tensor]:
        p = [torch.ones_like(t), t]
        for k in range(1, degree):  # Bonnet's recursion
            p.append(((2 * k + 1) * t * p[k] - k * p[k - 1]) / (k + 1))
        return p

    pr, pc = legendre(rows), legendre(cols)
    terms = [pr[i][:, None] * pc[j][None, :] for i in range(degree + 1) for j in range(degree + 1 - i) if i + j]
    return torch.stack(terms).float()


def bias_field(
    x: torch.Tensor,
    generator: torch.Generator,
    strength: float,
    channel_groups: list[list[int]] | None = None,
    degree: int = 3,
) -> torch.Tensor:
    """Multiply the brain pixels of each slice (N, C, H, W) by a smooth random field, as the coil's
    uneven sensitivity does in MRI that is not bias-corrected (this dataset's slices are not).

    The field is exp of a sum of 2D Legendre products of degree <= `degree` (the model of
    MONAI's `RandBiasField`) whose coefficients are uniform in [-strength, strength]; one field per
    sample, or one per sample and channel group (`sequence_groups`) when `channel_groups` is given.
    The result is clamped to [0, 1]; background (0) stays 0.
    """
    n, c, h, w = x.shape
    basis = legendre_basis(h, w, degree).to(x.device)
    g = len(channel_groups) if channel_groups is not None else 1
    coeff = (torch.rand(n, g, basis.shape[0], generator=generator) * 2 - 1) * strength
    log_field = torch.einsum("ngk,khw->nghw", coeff.to(x.device), basis)
    field = torch.exp(log_field[:, group_index(channel_groups, c).to(x.device)])
    return torch.where(x > 0, (x * field).clamp(0, 1), x)


def histogram_shift(
    x: torch.Tensor,
    generator: torch.Generator,
    p: float,
    channel_groups: list[list[int]] | None = None,
    points: int = 10,
) -> torch.Tensor:
    """Pass the brain pixels of a share `p` of slices (N, C, H, W in [0, 1]) through a random monotone
    piecewise-linear intensity curve, as scanners and sequences differ in contrast beyond gain and gamma.

    The curve is MONAI's `RandHistogramShift` model: `points` control points evenly spaced on [0, 1],
    the ends fixed, and each inner point drawn in turn between the one before it (as drawn) and the one
    after it (as it was). One curve per chosen sample, or per sample and channel group (`sequence_groups`,
    each group chosen with probability `p`) when `channel_groups` is given. Background (0) stays 0.
    """
    if p <= 0:
        return x
    n, c = x.shape[:2]
    g = len(channel_groups) if channel_groups is not None else 1
    ref = torch.linspace(0, 1, points)
    ys = [torch.zeros(n, g)]
    for i in range(1, points - 1):
        lo, hi = ys[-1], ref[i + 1]
        ys.append(lo + torch.rand(n, g, generator=generator) * (hi - lo))
    ys.append(torch.ones(n, g))
    curve = torch.stack(ys, -1)  # (n, g, points)
    chosen = torch.rand(n, g, generator=generator) < p
    index = group_index(channel_groups, c)
    curve, chosen = curve[:, index].to(x.device, x.dtype), chosen[:, index].to(x.device)  # per channel
    pos = x.clamp(0, 1) * (points - 1)
    seg = pos.floor().clamp(max=points - 2).long()
    t = pos - seg
    lo = curve.gather(2, seg.flatten(2)).view_as(x)
    hi = curve.gather(2, seg.flatten(2) + 1).view_as(x)
    out = lo + t * (hi - lo)
    return torch.where(chosen[..., None, None] & (x > 0), out, x)
