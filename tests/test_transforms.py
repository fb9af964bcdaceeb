import numpy as np
import pytest
import torch

from tumorseg.data.lgg import find_cases, load_case
from tumorseg.data.transforms import (
    augment,
    bias_field,
    dim_lesions,
    histogram_shift,
    legendre_basis,
    missing_sequences,
    preprocess,
    resize_uint8,
    scale_intensity,
    sequence_groups,
    upper_quantile,
)


def test_augment_keeps_image_and_mask_aligned():
    # The image is the mask itself: after the same warp, thresholding it must give the mask.
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(8, 1, 64, 64)
    y[:, :, 20:40, 10:30] = 1
    y[:, :, 5:12, 45:60] = 1
    x = y.repeat(1, 3, 1, 1)
    xa, ya = augment(x, y, g, intensity=0, gamma=0)
    assert not torch.equal(ya, y)  # something moved
    assert torch.equal((xa[:, :1] > 0.5).float(), ya)
    assert set(ya.unique().tolist()) <= {0.0, 1.0}


def test_augment_real_slice_tumor_moves_with_image(lgg_root):
    case = load_case(find_cases(lgg_root / "TCGA_CS_4941_19960909")[0], 128)
    i = int(case.tumor_slices[len(case.tumor_slices) // 2])
    img = scale_intensity(torch.from_numpy(case.images[i : i + 1]))
    mask = torch.from_numpy(case.masks[i : i + 1])[:, None].float()
    marked = img.clone()
    marked[:, 0] = mask[:, 0]  # paint the mask into channel 0 as a probe
    g = torch.Generator().manual_seed(3)
    xa, ya = augment(marked, mask, g, intensity=0, gamma=0)
    agree = ((xa[:, 0] > 0.5) == (ya[:, 0] > 0.5)).float().mean()
    assert agree == 1.0
    assert ya.sum() > 0


@pytest.mark.parametrize("zoom", [0.1, 0.3])
def test_augment_zoom_scales_tumor_area_within_its_range(zoom):
    # a centred square, moved by zoom alone: its area changes by a factor in [(1-z)^2, (1+z)^2]
    y = torch.zeros(256, 1, 96, 96)
    y[:, :, 33:63, 33:63] = 1
    _, ya = augment(y.repeat(1, 3, 1, 1), y, torch.Generator().manual_seed(0), rotate_deg=0, shift=0, scale=zoom,
                    intensity=0, gamma=0)  # fmt: skip
    ratio = ya.sum((1, 2, 3)) / y[0].sum()
    lo, hi = (1 - zoom) ** 2, (1 + zoom) ** 2
    assert ratio.min() >= lo * 0.9 and ratio.max() <= hi * 1.1
    assert ratio.min() < (1 - zoom / 2) ** 2 and ratio.max() > (1 + zoom / 2) ** 2  # the range is used


def test_scale_intensity_range():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    for mode in ("fixed", "percentile"):
        y = scale_intensity(x, mode)
        assert y.dtype == torch.float32 and y.min() >= 0 and y.max() <= 1
    assert torch.allclose(scale_intensity(x), x.float() / 255)


def test_preprocess_resizes_any_size():
    x = torch.randint(0, 256, (1, 3, 300, 200), dtype=torch.uint8)
    assert preprocess(x, 128).shape == (1, 3, 128, 128)


def test_resize_uint8_halves_by_block_mean():
    a = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4) * 10
    out = resize_uint8(a, 2)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0, 0, 0] == round((0 + 10 + 40 + 50) / 4)


def test_augment_gamma_keeps_range_and_background():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32) * 0.9 + 0.05
    x[:, :, :4] = 0  # background rows
    y = torch.zeros(8, 1, 32, 32)
    xa, _ = augment(x, y, g, rotate_deg=0, shift=0, scale=0, intensity=0, gamma=0.4)
    xa_ref, _ = augment(x, y, torch.Generator().manual_seed(0), rotate_deg=0, shift=0, scale=0, intensity=0, gamma=0)
    assert 0 <= xa.min() and xa.max() <= 1
    assert torch.equal(xa[:, :, :4], torch.zeros_like(xa[:, :, :4]))
    assert not torch.allclose(xa, xa_ref, atol=1e-3)  # gamma changed the brain pixels
    # each sample got one exponent: log(xa)/log(xa_ref) is constant within a sample
    ratio = (xa_ref[:, :, 8:].log() / xa[:, :, 8:].log()).reshape(8, -1)
    assert torch.allclose(ratio.min(1).values, ratio.max(1).values, rtol=1e-3)


def test_augment_channel_groups_jitter_each_sequence_on_its_own():
    """With groups, brightness/contrast/gamma differ between sequences but not within a group;
    without them every channel of a slice gets the same change."""
    x = torch.full((16, 5, 8, 8), 0.5)
    y = torch.zeros(16, 1, 8, 8)
    groups = sequence_groups(own=3, flair=1, context=1)
    assert groups == [[0], [1, 3, 4], [2]]
    kw = {"rotate_deg": 0, "shift": 0, "scale": 0}
    xg, _ = augment(x, y, torch.Generator().manual_seed(0), channel_groups=groups, **kw)
    x1, _ = augment(x, y, torch.Generator().manual_seed(0), **kw)
    assert 0 <= xg.min() and xg.max() <= 1
    assert torch.equal(xg[:, 3], xg[:, 1]) and torch.equal(xg[:, 4], xg[:, 1])  # FLAIR and its context
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert (xg[:, a, 0, 0] - xg[:, b, 0, 0]).abs().gt(1e-3).sum() >= 14  # differ in (almost) every slice
    assert torch.equal(x1, x1[:, :1].expand_as(x1))  # one draw per slice
    with pytest.raises(ValueError, match="each of the 5 channels once"):
        augment(x, y, torch.Generator().manual_seed(0), channel_groups=[[0], [1], [2]], **kw)


@pytest.mark.parametrize("n", [1, 2, 3, 100, 16384, 65536])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99, 1.0])
def test_upper_quantile_matches_torch_quantile(n, q):
    g = torch.Generator().manual_seed(n)
    x = torch.randint(0, 256, (6, n), generator=g) / 255.0
    torch.testing.assert_close(upper_quantile(x, q), torch.quantile(x, q, dim=1), atol=1e-5, rtol=0)


def test_dim_lesions_darkens_only_inside_tumors(lgg_root):
    case = load_case(find_cases(lgg_root / "TCGA_CS_4941_19960909")[0], 128)
    tumor = case.tumor_slices[:3].tolist()
    empty = [i for i in range(len(case.masks)) if i not in tumor][:2]
    idx = tumor + empty
    x = scale_intensity(torch.from_numpy(case.images[idx]), "percentile")
    y = torch.from_numpy(case.masks[idx])[:, None].float()
    xd, yd = dim_lesions(x, y, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(yd, y)  # the label stays
    assert torch.all(xd <= x + 1e-7)  # only darker
    near = torch.nn.functional.max_pool2d(y, 5, stride=1, padding=2) > 0
    assert torch.equal(xd[~near.expand_as(x)], x[~near.expand_as(x)])  # nothing away from the tumor moves
    changed = (x - xd).flatten(1).amax(1)
    assert (changed[: len(tumor)] > 0.05).sum() >= 2  # tumor slices got a darkened part (a small one may miss the blob)
    assert torch.all(changed[len(tumor) :] == 0)  # empty slices are left alone
    dimmed = (x - xd > 1e-3)[:, 1] & (y[:, 0] > 0)
    assert 0 < dimmed.sum() < (y > 0).sum()  # a part of the tumor, not all of it


def test_dim_lesions_share_and_seed():
    y = torch.zeros(200, 1, 32, 32)
    y[:, :, 8:24, 8:24] = 1
    x = torch.full((200, 3, 32, 32), 0.8)
    a, _ = dim_lesions(x, y, torch.Generator().manual_seed(1), p=0.3)
    b, _ = dim_lesions(x, y, torch.Generator().manual_seed(1), p=0.3)
    assert torch.equal(a, b)
    share = ((x - a).flatten(1).amax(1) > 0).float().mean()
    assert 0.2 < share < 0.4
    none, _ = dim_lesions(x, y, torch.Generator().manual_seed(1), p=0.0)
    assert torch.equal(none, x)


def test_legendre_basis_matches_numpy():
    """The field's basis is numpy's 2D Legendre series, term by term (total degree 1-3, no constant)."""
    from numpy.polynomial import legendre

    rows, cols = np.linspace(-1, 1, 9), np.linspace(-1, 1, 12)
    basis = legendre_basis(9, 12, degree=3)
    pairs = [(i, j) for i in range(4) for j in range(4 - i) if i + j]
    assert basis.shape == (len(pairs), 9, 12)
    for term, (i, j) in zip(basis, pairs):
        coeff = np.zeros((4, 4))
        coeff[i, j] = 1
        np.testing.assert_allclose(term.numpy(), legendre.leggrid2d(rows, cols, coeff), atol=1e-5)


def test_bias_field_is_smooth_per_group_and_keeps_the_background():
    """Each sequence group gets its own smooth field, the background stays 0, values stay in [0, 1],
    the same seed gives the same field, and strength 0 changes nothing."""
    x = torch.full((8, 3, 64, 64), 0.5)
    x[:, :, :, :8] = 0  # background
    groups = [[0], [1], [2]]
    out = bias_field(x, torch.Generator().manual_seed(0), 0.3, groups)
    assert torch.equal(out, bias_field(x, torch.Generator().manual_seed(0), 0.3, groups))
    assert (out[..., :8] == 0).all() and out.min() >= 0 and out.max() <= 1
    ratio = out[..., 8:] / 0.5
    assert (ratio - 1).abs().amax() > 0.05  # it does something
    assert (ratio[..., 1:, :] - ratio[..., :-1, :]).abs().amax() < 0.2  # smooth: small steps between pixels
    assert not torch.allclose(ratio[:, 0], ratio[:, 1])  # one field per group
    shared = bias_field(x, torch.Generator().manual_seed(0), 0.3)
    assert torch.allclose(shared[:, 0], shared[:, 1]) and torch.allclose(shared[:, 1], shared[:, 2])
    assert torch.equal(bias_field(x, torch.Generator().manual_seed(0), 0.0, groups), x)


def test_histogram_shift_is_a_monotone_curve_per_group_on_a_share_of_slices():
    """Each chosen (slice, group) gets its own increasing curve with 0 and 1 fixed, the background
    stays 0, about p of them are chosen, the same seed repeats, and p = 0 changes nothing."""
    ramp = torch.linspace(0, 1, 201)
    x = ramp.repeat(400, 3, 4, 1)  # every intensity, in every channel of every slice
    x[..., 0, :] = 0  # a background row
    groups = [[0], [1, 2]]  # channel 2 copies channel 1 (as 2.5D context does)
    out = histogram_shift(x, torch.Generator().manual_seed(0), 0.3, groups)
    assert torch.equal(out, histogram_shift(x, torch.Generator().manual_seed(0), 0.3, groups))
    assert (out[..., 0, :] == 0).all() and out.min() >= 0 and out.max() <= 1
    body = out[..., 1:, :]
    assert (body.diff(dim=-1) >= -1e-6).all()  # increasing: the curve keeps the order of intensities
    assert torch.allclose(body[..., -1], torch.ones(())) and torch.allclose(body[..., 0], torch.zeros(()))
    changed = (body - x[..., 1:, :]).abs().flatten(2).amax(-1) > 1e-4  # (slices, channels)
    assert torch.equal(changed[:, 1], changed[:, 2])  # one curve per group
    assert torch.allclose(out[changed[:, 1], 1], out[changed[:, 1], 2])
    assert not torch.equal(changed[:, 0], changed[:, 1])  # groups are chosen apart
    assert 0.22 < changed[:, 0].float().mean() < 0.38 and 0.22 < changed[:, 1].float().mean() < 0.38
    assert torch.equal(histogram_shift(x, torch.Generator().manual_seed(0), 0.0, groups), x)
    shared = histogram_shift(x, torch.Generator().manual_seed(0), 1.0)
    assert torch.allclose(shared[:, 0], shared[:, 1]) and torch.allclose(shared[:, 1], shared[:, 2])


def test_missing_sequences_copies_flair_into_the_t1_channels(lgg_root):
    """Each pattern (no pre-T1, no post-T1, neither) shows up about p/3 of the time, FLAIR and any
    2.5D context channels stay as they were, and slices not chosen are untouched."""
    case = load_case(find_cases(lgg_root / "TCGA_CS_4941_19960909")[0], 64)
    x = scale_intensity(torch.from_numpy(case.images))
    x = torch.cat([x, torch.rand(len(x), 2, 64, 64)], 1).repeat(40, 1, 1, 1)  # + 2 context channels
    assert not torch.equal(x[:, 0], x[:, 1]) and not torch.equal(x[:, 2], x[:, 1])
    out = missing_sequences(x, torch.Generator().manual_seed(0), 0.3)
    no_pre = (out[:, 0] == out[:, 1]).flatten(1).all(1) & ~(x[:, 0] == x[:, 1]).flatten(1).all(1)
    no_post = (out[:, 2] == out[:, 1]).flatten(1).all(1) & ~(x[:, 2] == x[:, 1]).flatten(1).all(1)
    for share in (
        (no_pre & ~no_post).float().mean(),
        (no_post & ~no_pre).float().mean(),
        (no_pre & no_post).float().mean(),
    ):
        assert abs(share.item() - 0.1) < 0.03
    assert torch.equal(out[:, 1], x[:, 1]) and torch.equal(out[:, 3:], x[:, 3:])
    kept = ~(no_pre | no_post)
    assert torch.equal(out[kept], x[kept])
    assert torch.equal(missing_sequences(x, torch.Generator().manual_seed(0), 0.0), x)
    again = missing_sequences(x, torch.Generator().manual_seed(0), 0.3)
    assert torch.equal(again, out)
