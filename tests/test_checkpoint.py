import pickle
from pathlib import Path

import pytest
import torch

from tumorseg.checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from tumorseg.config import TrainConfig
from tumorseg.errors import CheckpointError
from tumorseg.models import UNet


@pytest.fixture
def ckpt_path(tmp_path):
    cfg = TrainConfig(model={"base": 4, "depth": 2, "image_size": 32})
    model = UNet(3, 1, 4, 2)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, Checkpoint(cfg, model.state_dict(), {"epoch": 1}))
    return path


def test_roundtrip_rebuilds_model(ckpt_path):
    ck = load_checkpoint(ckpt_path)
    model = build_model(ck)
    assert ck.meta == {"epoch": 1}
    assert not model.training
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_half_storage_loads_as_float32(ckpt_path, tmp_path):
    ck = load_checkpoint(ckpt_path)
    half = tmp_path / "h.safetensors"
    save_checkpoint(half, ck, half=True)
    assert half.stat().st_size < ckpt_path.stat().st_size
    ck2 = load_checkpoint(half)
    assert all(v.dtype in (torch.float32, torch.int64) for v in ck2.model.values())


def test_truncated_checkpoint_refused(ckpt_path):
    ckpt_path.write_bytes(ckpt_path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="m.safetensors: not a valid safetensors checkpoint"):
        load_checkpoint(ckpt_path)


def test_tampered_checkpoint_refused(ckpt_path):
    data = bytearray(ckpt_path.read_bytes())
    data[-5] ^= 0xFF
    ckpt_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(ckpt_path)


def test_a_checkpoint_without_its_checksum_says_so(ckpt_path):
    """Its sha256 key removed, it was called a "checksum mismatch" (QA)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(ckpt_path), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "sha256"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(ckpt_path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"m.safetensors: no checksum \(metadata key sha256\): not a tumorseg"):
        load_checkpoint(ckpt_path)


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickle_checkpoint_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, bad)
    with pytest.raises(CheckpointError, match="evil.pt: a pickle/zip checkpoint"):
        load_checkpoint(bad)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="evil.pkl"):
        load_checkpoint(raw)
    assert not (tmp_path / "PWNED").exists()


def test_onnx_graph_given_as_checkpoint_is_named_as_such():
    shipped_graph = Path(__file__).parents[1] / "weights" / "tumorseg-lgg-unet.int8.onnx"
    with pytest.raises(CheckpointError, match="int8.onnx: an ONNX graph, not a checkpoint; give the .safetensors"):
        load_checkpoint(shipped_graph)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: cannot read"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_metadata_that_is_not_an_object_is_refused(ckpt_path, tmp_path):
    """Valid JSON that is not an object (here a list, with a valid checksum) once gave an AttributeError
    traceback in `evaluate`."""
    ck = load_checkpoint(ckpt_path)
    odd = tmp_path / "odd.safetensors"
    save_checkpoint(odd, Checkpoint(ck.config, ck.model, []))
    with pytest.raises(CheckpointError, match=r"odd\.safetensors: unreadable metadata"):
        load_checkpoint(odd)


def test_weights_unlike_their_config_are_refused_naming_the_file(tmp_path):
    """A checkpoint whose config says base 8 over base-4 weights was refused without its file's name."""
    from tumorseg.infer import Predictor

    path = tmp_path / "odd.safetensors"
    cfg = TrainConfig(model={"base": 8, "depth": 2, "image_size": 32})
    save_checkpoint(path, Checkpoint(cfg, UNet(3, 1, 4, 2).state_dict()))
    with pytest.raises(CheckpointError, match=r"odd.safetensors: weights do not match the config's model"):
        Predictor.from_checkpoint(path, "torch")


def test_a_large_safetensors_file_of_another_kind_is_refused_from_its_header(tmp_path):
    """Every checkpoint was read whole before its header was looked at: a 100 MB file of another
    model, given as --weights by mistake, took 100 MB of memory to be refused."""
    import tracemalloc

    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(25_000_000)}, str(path), metadata={"format": "someone-else"})
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="other.safetensors: not a tumorseg checkpoint"):
            load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


def _rewrite_header(path: Path, edit) -> None:
    """Edit a safetensors file's header metadata in place, leaving its tensor bytes (and stored sha256) as they are."""
    import json
    import struct

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header["__metadata__"])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the header is padded with spaces to an 8-byte boundary
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


@pytest.mark.parametrize("key", ["meta", "config"])
def test_an_edited_config_or_metadata_fails_the_checksum(tmp_path, key):
    """The checksum covers the header's config and metadata, not only the tensors: a patient moved
    into the test split (or a config edited) under the old sha256 must be refused, not evaluated."""
    import json

    cfg = TrainConfig(model={"base": 4, "depth": 2, "image_size": 32})
    path = tmp_path / "m.safetensors"
    split = {"train": ["A", "B"], "val": ["C"], "test": ["D"]}
    save_checkpoint(path, Checkpoint(cfg, UNet(3, 1, 4, 2).state_dict(), {"epoch": 1, "split": split}))
    _rewrite_header(path, lambda m: None)  # the rewrite alone changes nothing that matters
    assert load_checkpoint(path).meta["split"]["test"] == ["D"]

    def edit(m):
        value = json.loads(m[key])
        if key == "meta":
            value["split"]["test"] = ["A", "D"]
        else:
            value["seed"] = value["seed"] + 1
        m[key] = json.dumps(value)

    _rewrite_header(path, edit)
    with pytest.raises(CheckpointError, match=r"m\.safetensors: checksum mismatch"):
        load_checkpoint(path)


def test_a_run_folder_or_an_image_given_as_a_checkpoint_says_what_it_is(ckpt_path, tmp_path):
    """A run folder once gave "cannot read checkpoint (Is a directory)", a PNG "header too large"."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"run: a folder, not a checkpoint; give the \.safetensors file"):
        load_checkpoint(run)
    shutil.copy(ckpt_path, run / "last.safetensors")
    with pytest.raises(CheckpointError, match=f"a folder, not a checkpoint; give {run / 'last.safetensors'}"):
        load_checkpoint(run)
    png = tmp_path / "scan.safetensors"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match="scan.safetensors: a PNG image, not a checkpoint"):
        load_checkpoint(png)
