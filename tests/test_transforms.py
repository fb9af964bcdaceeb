import numpy as np
import torch

from tumorseg.data.lgg import find_cases, load_case
from tumorseg.data.transforms import augment, preprocess, resize_uint8, scale_intensity


def test_augment_keeps_image_and_mask_aligned():
    # The image is the mask itself: after the same warp, thresholding it must give the mask.
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(8, 1, 64, 64)
    y[:, :, 20:40, 10:30] = 1
    y[:, :, 5:12, 45:60] = 1
    x = y.repeat(1, 3, 1, 1)
    xa, ya = augment(x, y, g, intensity=0)
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
    xa, ya = augment(marked, mask, g, intensity=0)
    agree = ((xa[:, 0] > 0.5) == (ya[:, 0] > 0.5)).float().mean()
    assert agree == 1.0
    assert ya.sum() > 0


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
