"""The Python API's Predictor on input a caller may well give it: lists, empty slices, wrong
shapes, bad settings. The shipped model, real slices; errors are TumorsegErrors that say what is wrong."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tumorseg.data.lgg import find_cases, load_case
from tumorseg.errors import TumorsegError
from tumorseg.infer import Predictor

PID = "TCGA_CS_4941_19960909"


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    return Predictor.from_checkpoint(backend="torch")


@pytest.fixture(scope="module")
def slices(lgg_root) -> np.ndarray:
    return load_case(find_cases(lgg_root / PID)[0], None).images[8:12]


def test_a_list_of_slices_is_an_array_of_them(shipped, slices):
    np.testing.assert_array_equal(shipped.segment(list(slices)), shipped.segment(slices))


def test_bad_shapes_and_settings_are_said(shipped, slices):
    with pytest.raises(TumorsegError, match="slices of size 0x256"):
        shipped.predict(slices[:, :, :0])
    probs = shipped.predict(slices)
    with pytest.raises(TumorsegError, match=r"must be \(N, H, W\), one map per slice; got shape \(256, 256\)"):
        shipped.mask(probs[0], volume=True)
    with pytest.raises(TumorsegError, match="3 slice numbers for 4 slices"):
        shipped.mask_with_notes(probs, volume=True, numbers=[1, 2, 3])
    with pytest.raises(TumorsegError, match="batch_size 0: must be at least 1"):
        Predictor.from_checkpoint(backend="torch", batch_size=0)
    with pytest.raises(TumorsegError, match="threads must be 0 .one per core. or more, got -1"):
        Predictor.from_checkpoint(backend="torch", threads=-1)  # once PyTorch's own RuntimeError
    with pytest.raises(TumorsegError, match="2 slice numbers for 4 slices"):
        shipped.predict(slices, volume=True, numbers=[1, 2])  # before the model runs, 2.5D or not
    with pytest.raises(TumorsegError, match="the slices differ in shape"):
        shipped.predict([slices[0], slices[1][:, :128]])
    with pytest.raises(TumorsegError, match="threshold 1: must lie strictly between"):
        Predictor.from_checkpoint("no/such/checkpoint.safetensors", threshold=1)  # said before any loading
    # once a bare TypeError, later in predict() (2.5) or at once ('0.5')
    with pytest.raises(TumorsegError, match="batch_size 2.5: must be a whole number"):
        Predictor.from_checkpoint(backend="torch", batch_size=2.5)
    with pytest.raises(TumorsegError, match="threshold '0.5': must be a number between 0 and 1"):
        Predictor.from_checkpoint(backend="torch", threshold="0.5")
    with pytest.raises(TumorsegError, match="threshold nan: must lie strictly between"):
        Predictor.from_checkpoint(backend="torch", threshold=float("nan"))


def test_mask_takes_only_probabilities_and_min_size_is_checked_at_once(shipped, slices):
    """`mask` thresholded a saved X_prob.png (probability x 255) as it was, so every non-zero pixel was
    tumor, and took NaN as no tumor; maps of two sizes and a min_size of '10' or -5 gave a bare
    ValueError or TypeError, or none; select_channels blamed a file named None."""
    from tumorseg.data.lgg import select_channels
    from tumorseg.errors import DataError

    probs = shipped.predict(slices)
    assert shipped.mask(probs).any()  # the real maps pass
    with pytest.raises(TumorsegError, match=r"must lie in \[0, 1\]; got values from 0 to 2\d\d \(an X_prob.png"):
        shipped.mask((probs * 255).astype(np.uint8))
    with pytest.raises(TumorsegError, match="probabilities hold NaN or infinite values"):
        shipped.mask(np.full((1, 8, 8), np.nan, np.float32))
    with pytest.raises(TumorsegError, match="the probability maps differ in shape"):
        shipped.mask([np.zeros((8, 8)), np.zeros((16, 16))])
    for bad in (-5, 2.5, "10"):
        with pytest.raises(TumorsegError, match=f"min_size {bad!r}: must be a whole number of pixels, 0 or more"):
            Predictor.from_checkpoint("no/such/checkpoint.safetensors", min_size=bad)  # before any loading
    with pytest.raises(DataError, match=r"^the image: expected HxW or HxWxC .* \(3, 256, 256\) \(channels first\?"):
        select_channels(slices[0], "all")  # (C, H, W), as load_case gives slices


def test_threads_follow_omp_num_threads_unless_given():
    """Loading a Predictor sets PyTorch's threads: $OMP_NUM_THREADS when set, `threads` when given."""
    code = (
        "import torch; from tumorseg.infer import Predictor; Predictor.from_checkpoint(backend='torch'); "
        "a = torch.get_num_threads(); Predictor.from_checkpoint(backend='torch', threads=2); "
        "print(a, torch.get_num_threads())"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "2"]


def test_boolean_slices_are_read_as_white_on_black_like_a_1_bit_file():
    from tumorseg.infer import as_uint8_slices

    x = np.zeros((1, 3, 4, 4), bool)
    x[..., 1:3, 1:3] = True
    assert set(np.unique(as_uint8_slices(x))) == {0, 255}


def test_an_image_as_read_image_returns_it_gets_the_call_that_fits(shipped, lgg_root):
    from tumorseg.data.lgg import select_channels
    from tumorseg.io import read_image

    img = read_image(next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png")))  # (H, W, 3)
    with pytest.raises(TumorsegError, match=r"got shape \(256, 256, 3\); for one image as read_image returns it"):
        shipped.predict(img)
    assert shipped.predict(select_channels(img, shipped.config.channels)[None]).shape == (1, 256, 256)


@pytest.mark.parametrize("backend", ["torch", "onnx-int8"])
def test_one_predictor_used_from_4_threads_at_once_gives_the_probabilities_of_one_call_at_a_time(backend, lgg_root):
    """The README says one Predictor may serve several threads at once: 4 threads calling one
    Predictor together, each on other slices, get exactly what calls one after another get."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    if backend == "onnx-int8":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    pred = Predictor.from_checkpoint(backend=backend)
    assert pred.backend == backend
    images = load_case(find_cases(lgg_root / PID)[0], None).images
    batches = [images[i : i + 2] for i in range(6, 22, 2)]  # 8 calls of 2 slices, tumor and empty ones
    expected = [pred.predict(b) for b in batches]
    together = Barrier(4, timeout=60)  # each round of 4 calls starts at once

    def call(b: np.ndarray) -> np.ndarray:
        together.wait()
        return pred.predict(b)

    for _ in range(2):
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(call, batches))
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g, e)
    assert len({e.tobytes() for e in expected}) == len(batches)  # the calls differ, so a mix-up would show


def test_settings_changed_on_the_object_are_checked(shipped, slices):
    """`tta="no"` once turned flip averaging on (a truthy string), `p.threshold = 2.0` made every
    mask empty and `p.batch_size = 0` failed in range()."""
    with pytest.raises(TumorsegError, match="tta 'no': must be True or False"):
        Predictor.from_checkpoint(backend="torch", tta="no")
    for name, value, said in (("threshold", 2.0, "threshold 2.0: must lie strictly between 0 and 1"),
                              ("batch_size", 0, "batch_size 0: must be at least 1"),
                              ("min_size", -1, "min_size -1"), ("largest", "yes", "largest 'yes'")):  # fmt: skip
        with pytest.raises(TumorsegError, match=said):
            setattr(shipped, name, value)
    assert shipped.threshold == 0.5 and shipped.batch_size == 32 and shipped.largest is True  # left as they were


def test_slice_numbers_are_checked_and_mask_takes_them(shipped, slices):
    """mask(volume=True) once took no `numbers` (a volume with gaps counted as continuous, unlike
    segment); numbers that were not whole or repeated failed in a TypeError or changed the result."""
    probs = np.zeros((4, 32, 32), np.float32)
    probs[:2, 4:14, 4:14], probs[2:, 4:20, 4:20] = 0.9, 0.9  # two parts, the second larger
    together = shipped.mask(probs, volume=True)  # slices in a row: one 3D part, all kept
    apart = shipped.mask(probs, volume=True, numbers=[1, 2, 10, 11])  # a gap: two parts, the larger kept
    assert together[:2].any() and not apart[:2].any() and np.array_equal(apart[2:], together[2:])
    np.testing.assert_array_equal(apart, shipped.mask_with_notes(probs, True, [1, 2, 10, 11])[0])
    probs = shipped.predict(slices)
    for numbers, said in ((["a", "b", "c", "d"], "slice numbers must be whole numbers"),
                          ([1, 1, 2, 3], "slice numbers must differ")):  # fmt: skip
        with pytest.raises(TumorsegError, match=said):
            shipped.mask(probs, volume=True, numbers=numbers)
        with pytest.raises(TumorsegError, match=said):
            shipped.predict(slices, volume=True, numbers=numbers)


def test_one_slice_or_a_file_name_gets_a_hint(shipped, slices):
    with pytest.raises(TumorsegError, match=r"for one slice \(C, H, W\), give it as slice\[None\]"):
        shipped.predict(slices[0])
    with pytest.raises(TumorsegError, match=r"got str 'x.png' \(read an image file with tumorseg.io.read_image\)"):
        shipped.predict("x.png")


def test_case_numbers_make_the_notes_name_slices_as_the_cli_does(lgg_root):
    """The README's API example once gave no way to the files' slice numbers, so its close-call note
    said "slices 10-13 (counted from 0)" where `predict` says "slices 11-14"."""
    pred = Predictor.from_checkpoint()  # the shipped model on its default backend, as `predict` runs it
    arrays = load_case(find_cases(lgg_root / "TCGA_CS_5395_19981004")[0], None, pred.config.channels)
    assert arrays.numbers == list(range(1, len(arrays.images) + 1))
    probs = pred.predict(arrays.images, volume=True, numbers=arrays.numbers)
    _, notes = pred.mask_with_notes(probs, volume=True, numbers=arrays.numbers)
    assert len(notes) == 1 and "kept 3202 voxels in slices 11-14; dropped 2356 voxels in slices 5-6" in notes[0]
    assert "counted from 0" not in notes[0]
