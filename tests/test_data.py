import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import png_header_only
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tumorseg.data.lgg import find_cases, load_case, slice_files_in, slice_number, split_cases
from tumorseg.errors import DataError, TumorsegError
from tumorseg.io import read_image


def test_png_and_tiff_load_to_identical_arrays(lgg_root, tif_root):
    pid = "TCGA_CS_4941_19960909"
    tif = load_case(find_cases(tif_root)[0], 256)
    png = load_case(next(c for c in find_cases(lgg_root) if c.id == pid), 256)
    assert tif.id == png.id == pid
    assert len(tif.images) == len(png.images) > 20
    np.testing.assert_array_equal(tif.images, png.images)
    np.testing.assert_array_equal(tif.full_masks, png.full_masks)


def test_slices_sorted_numerically(lgg_root):
    case = next(c for c in find_cases(lgg_root) if c.id == "TCGA_CS_4941_19960909")
    numbers = [slice_number(p)[0] for p in case.images]
    assert numbers == list(range(1, len(numbers) + 1))
    assert all(m.stem == i.stem + "_mask" for i, m in zip(case.images, case.masks))


def test_finds_all_patients(lgg_root):
    cases = find_cases(lgg_root)
    assert len(cases) == 77
    assert sum(len(c.images) for c in cases) == 2771


def test_load_case_shapes_and_binary_masks(lgg_root):
    case = load_case(find_cases(lgg_root / "TCGA_CS_4941_19960909")[0], 128)
    s = len(case.images)
    assert case.images.shape == (s, 3, 128, 128) and case.images.dtype == np.uint8
    assert case.masks.shape == (s, 128, 128) and set(np.unique(case.masks)) <= {0, 1}
    assert case.full_masks.shape == (s, 256, 256)
    flair = load_case(find_cases(lgg_root / "TCGA_CS_4941_19960909")[0], 64, "flair")
    assert flair.images.shape == (s, 1, 64, 64)


@given(
    n=st.integers(3, 120),
    seed=st.integers(0, 10_000),
    val=st.floats(0.0, 0.4),
    test=st.floats(0.0, 0.4),
)
def test_split_is_a_partition_by_patient(n, seed, val, test):
    ids = [f"P{i:03d}" for i in range(n)]
    split = split_cases(ids, seed, val, test)
    groups = [set(v) for v in split.values()]
    assert sum(len(g) for g in groups) == n
    assert set().union(*groups) == set(ids)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not groups[a] & groups[b]
    assert split == split_cases(list(reversed(ids)), seed, val, test)  # order-independent


def test_split_on_real_patients(lgg_root):
    ids = [c.id for c in find_cases(lgg_root)]
    split = split_cases(ids, 0, 0.1, 0.2)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (54, 8, 15)
    assert split != split_cases(ids, 1, 0.1, 0.2)


# --- errors: each names the file ---


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_cases(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no slices found"):
        find_cases(tmp_path)


def test_image_without_mask(tiny_lgg):
    victim = next(tiny_lgg.glob("*/*_9_mask.png"))
    victim.unlink()
    with pytest.raises(DataError, match=r"_9\.png: image has no mask"):
        find_cases(tiny_lgg)


def test_mask_without_image(tiny_lgg):
    victim = next(tiny_lgg.glob("*/*_9.png"))
    victim.unlink()
    with pytest.raises(DataError, match=r"_9_mask\.png: mask has no image"):
        find_cases(tiny_lgg)


def test_mask_size_differs(tiny_lgg):
    victim = next(tiny_lgg.glob("*/*_10_mask.png"))
    Image.fromarray(np.zeros((100, 120), np.uint8)).save(victim)
    case = next(c for c in find_cases(tiny_lgg) if c.id == victim.parent.name)
    with pytest.raises(DataError, match=r"_10_mask\.png: mask is 120x100 but its image is 256x256"):
        load_case(case, 64)


def test_corrupt_file(tiny_lgg):
    victim = next(tiny_lgg.glob("*/*_11.png"))
    victim.write_bytes(victim.read_bytes()[:100])
    case = next(c for c in find_cases(tiny_lgg) if c.id == victim.parent.name)
    with pytest.raises(DataError, match=r"_11\.png: cannot read image"):
        load_case(case, 64)


def test_text_renamed_png(tmp_path):
    p = tmp_path / "x.png"
    p.write_text("not an image")
    with pytest.raises(DataError, match="x.png: cannot read image"):
        read_image(p)


def test_a_file_of_another_kind_is_named_as_not_an_image(tmp_path):
    """A .txt once got "not a valid TXT file, or truncated", as if TXT were an image format."""
    p = tmp_path / "notes.txt"
    p.write_text("not an image")
    with pytest.raises(DataError, match=r"notes.txt: not an image tumorseg reads: expected \.png .*\.jpeg slices"):
        read_image(p)


def test_huge_image_refused(tmp_path):
    p = png_header_only(tmp_path / "big.png", 30000, 30000)
    with pytest.raises(DataError, match="big.png: image .*too large"):
        read_image(p)


def test_sixteen_bit_tiff_is_scaled(tmp_path):
    import tifffile

    p = tmp_path / "x.tif"
    tifffile.imwrite(p, np.array([[0, 1000], [2000, 4000]], np.uint16))
    np.testing.assert_array_equal(read_image(p), [[0, 64], [128, 255]])


def test_tif_sample_copy_is_found_flat(tif_root, tmp_path):
    # a folder of slices with no patient subfolder is one case
    dst = tmp_path / "flat"
    shutil.copytree(tif_root / "TCGA_CS_4941_19960909", dst)
    cases = find_cases(dst)
    assert len(cases) == 1 and cases[0].images[0].suffix == ".tif"
    assert isinstance(cases[0].images[0], Path)


def test_folds_partition_the_non_test_patients():
    ids = [f"P{i:03d}" for i in range(40)]
    plain = split_cases(ids, 0, 0.0, 0.2)
    splits = [split_cases(ids, 0, 0.0, 0.2, folds=3, fold=k) for k in range(3)]
    vals = [set(s["val"]) for s in splits]
    assert set().union(*vals) == set(plain["train"]) and sum(map(len, vals)) == len(plain["train"])
    assert all(len(v) in (10, 11) for v in vals)
    for s in splits:
        assert s["test"] == plain["test"] and not set(s["train"]) & set(s["val"])
        assert set(s["train"]) | set(s["val"]) == set(plain["train"])


def test_fold_options_are_checked():
    from tumorseg.config import validate_config
    from tumorseg.errors import TumorsegError

    assert validate_config({"folds": 3, "fold": 2}).fold == 2
    bad_configs = [
        ({"folds": 3, "fold": 3}, "fold must be in"),
        ({"folds": 1}, "fold must be in"),
        ({"fold": 1}, "fold must be in"),
        ({"folds": 3, "val_frac": 0.1}, "leave val_frac at 0"),
    ]
    for bad, why in bad_configs:
        with pytest.raises(TumorsegError, match=why):
            validate_config(bad)


def test_slice_files_in_is_linear_in_a_folders_size():
    """Each file once rebuilt the folder's case-folded name set, so a folder of N files cost N**2
    (about a minute for these 6,000); the set is now built once. The filtering stays the same."""
    n = 1500
    files = [Path(f"P_{i}{suf}") for i in range(n) for suf in (".TIF", "_mask.tif")]
    files += [Path(f"P_{i}_pred.png") for i in range(n)]  # predict's output beside its input
    files += [Path(f"Q_{i}_pred.tif") for i in range(n)]  # a slice named _pred, with no Q_i beside it
    start = time.perf_counter()
    kept = slice_files_in(files)
    took = time.perf_counter() - start
    assert {p.name for p in kept} == {p.name for p in files if not p.name.startswith("P_") or "_pred" not in p.name}
    assert len(kept) == 3 * n
    assert took < 2.0, f"{took:.1f} s for {len(files)} files"


@pytest.mark.parametrize(
    "args, said",
    [
        (("abc", 0, 0.0, 0.5), "ids must be a list of patient ids"),
        ((["a", "b", "c"], 0, 0.7, 0.6), "their sum below 1"),
        ((["a", "b", "c"], 0, 0.0, 0.2, 5, 7), "fold must be in 0..folds-1"),
        ((["a", "b", "c"], 0, 0.0, 0.2, 1, 0), "fold must be in 0..folds-1"),
        ((["a", "b", "c"], 0, 0.2, 0.2, 2, 0), "leave val_frac at 0"),
    ],
)
def test_split_cases_refuses_what_train_refuses(args, said):
    """split_cases once split a string into its letters, and gave fold 7 of 5 or a 130 % split."""
    with pytest.raises(TumorsegError, match=said):
        split_cases(*args)


def test_load_case_refuses_unknown_settings(lgg_root):
    """load_case once read channels "t2" as all three and intensity "zscore" as "fixed"."""
    case = find_cases(lgg_root / "TCGA_CS_4941_19960909")[0]
    for kwargs, said in (({"channels": "t2"}, "channels 't2'"), ({"intensity": "zscore"}, "intensity 'zscore'")):
        with pytest.raises(TumorsegError, match=said):
            load_case(case, None, **kwargs)
    with pytest.raises(TumorsegError, match="size 0: a whole number of pixels"):
        load_case(case, 0)
    with pytest.raises(TumorsegError, match="load_case takes a Case from find_cases"):
        load_case(str(lgg_root / "TCGA_CS_4941_19960909"), None)
    assert load_case(case, np.int64(64)).images.shape[-2:] == (64, 64)  # numpy's whole numbers are sizes too
    ids = [f"P{i}" for i in range(10)]
    assert split_cases((i for i in ids), 0, 0.2, 0.2) == split_cases(ids, 0, 0.2, 0.2)  # a generator, read once
