"""`tumorseg export` on odd output paths, and the input contract the graph carries.

Everything here uses the shipped weights and real LGG slices; no model is trained.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from conftest import cli_here  # noqa: E402

from tumorseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from tumorseg.errors import TumorsegError  # noqa: E402
from tumorseg.export import export_int8, export_onnx  # noqa: E402
from tumorseg.infer import DEFAULT_WEIGHTS  # noqa: E402

PATIENT = "TCGA_CS_5395_19981004"


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A copy of the shipped checkpoint, so a failed test cannot damage the real one."""
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"shipped weights not found at {DEFAULT_WEIGHTS}")
    w = tmp_path / "ckpt" / "model.safetensors"
    w.parent.mkdir()
    shutil.copy(DEFAULT_WEIGHTS, w)
    return w


def cli_export(*args: str) -> subprocess.CompletedProcess:
    """`tumorseg export ARGS`, by the CLI's main() in this process (a subprocess spends 3 s starting)."""
    return cli_here("export", *args)


def test_export_to_a_folder_is_refused_with_a_message(shipped, tmp_path):
    """`--out DIR` once ended in an IsADirectoryError traceback after the whole export."""
    with pytest.raises(TumorsegError, match="is a folder"):
        export_onnx(shipped, tmp_path)
    r = cli_export("--weights", str(shipped), "--out", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr and "Traceback" not in r.stderr


def test_export_never_overwrites_the_checkpoint_it_reads(shipped):
    """`--out` equal to `--weights` once replaced the checkpoint with the ONNX graph, silently."""
    before = shipped.read_bytes()
    with pytest.raises(TumorsegError, match="is the checkpoint being exported"):
        export_onnx(shipped, shipped)
    r = cli_export("--weights", str(shipped), "--out", str(shipped))
    assert r.returncode == 2 and "is the checkpoint being exported" in r.stderr
    assert shipped.read_bytes() == before
    load_checkpoint(shipped)


def test_int8_export_never_overwrites_the_checkpoint_it_reads(shipped, lgg_root):
    before = shipped.read_bytes()
    with pytest.raises(TumorsegError, match="is the checkpoint being exported"):
        export_int8(shipped, shipped, lgg_root)
    assert shipped.read_bytes() == before


def test_export_under_a_file_is_refused_with_a_message(shipped, tmp_path):
    """An --out whose folder cannot be made (a file is in the way) is a user error, not a traceback."""
    (tmp_path / "afile").write_text("x")
    r = cli_export("--weights", str(shipped), "--out", str(tmp_path / "afile" / "model.onnx"))
    assert r.returncode == 2 and "cannot create its folder" in r.stderr and "Traceback" not in r.stderr


def test_export_into_a_read_only_folder_is_refused_with_a_message(shipped):
    """As root (CI) the check once skipped: root writes anywhere. It runs as nobody there."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="tumorseg-ro-"))  # pytest's tmp_path is root's alone (0700)
    ro = base / "ro"
    try:
        base.chmod(0o755)
        weights = shutil.copy(shipped, base / "model.safetensors")
        Path(weights).chmod(0o644)
        ro.mkdir(mode=0o555)
        cmd = [sys.executable, "-m", "tumorseg", "export", "--weights", str(weights), "--out", str(ro / "model.onnx")]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: permissions cannot be tested")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "is not writable" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert list(ro.iterdir()) == []
    finally:
        if ro.exists():
            ro.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def context_checkpoint(shipped: Path, out: Path) -> Path:
    """The shipped model as a 2.5D (`context` 1) checkpoint: its first convolution takes the two
    neighbouring FLAIR channels with zero weights, so it computes what the shipped model does."""
    import torch

    ckpt = load_checkpoint(shipped)
    w = ckpt.model["encoders.0.0.weight"]
    model = {**ckpt.model, "encoders.0.0.weight": torch.cat([w, torch.zeros(w.shape[0], 2, *w.shape[2:])], 1)}
    config = ckpt.config.model_copy(
        update={"model": ckpt.config.model.model_copy(update={"context": 1, "in_channels": 5})}
    )
    save_checkpoint(out, Checkpoint(config, model, ckpt.meta))
    return out


def test_graph_records_its_input_contract(shipped, lgg_root, tmp_path):
    """The file alone must say what its `image` input holds: slices as read for the shipped
    model, and for a 2.5D model the neighbours' FLAIR channels put together outside the graph."""
    import onnxruntime as ort

    from tumorseg.data.lgg import find_cases, load_case
    from tumorseg.infer import Predictor

    plain = export_onnx(shipped, tmp_path / "plain.onnx")
    meta = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta["tumorseg.context"] == "0" and meta["tumorseg.in_channels"] == "3"
    assert meta["tumorseg.intensity"] == "percentile" and "as read from the files" in meta["tumorseg.input"]
    from tumorseg.export import file_sha256

    assert meta["tumorseg.source_sha256"] == file_sha256(shipped)  # the fp32 graph names its checkpoint too

    ctx = context_checkpoint(shipped, tmp_path / "ctx" / "ctx.safetensors")
    graph = export_onnx(ctx, tmp_path / "ctx.onnx")
    s = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    meta = s.get_modelmeta().custom_metadata_map
    assert meta["tumorseg.context"] == "1" and meta["tumorseg.in_channels"] == "5"
    assert "add_context" in meta["tumorseg.input"]
    assert s.get_inputs()[0].shape[1] == 5

    # and that contract is the right one: fed as said, the graph matches the torch backend
    images = load_case(find_cases(lgg_root / PATIENT)[0], None).images[6:16]
    pred = Predictor.from_checkpoint(ctx, backend="torch")
    want = pred.predict(images, volume=True)
    got = s.run(None, {"image": pred.inputs(images, volume=True)})[0][:, 0]
    assert np.abs(got - want).max() < 1e-4
    assert np.array_equal(got > 0.5, want > 0.5)


def test_a_refused_export_leaves_no_new_folder(shipped, tmp_path):
    """`--out new/sub/m.onnx` made `new/sub` before the weights or data were read, and left it on refusal."""
    r = cli_export("--weights", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "new" / "sub" / "m.onnx"))
    assert r.returncode == 2 and "nope.safetensors" in r.stderr
    r = cli_export("--weights", str(shipped), "--int8", "--data", str(tmp_path / "nodata"),
                   "--out", str(tmp_path / "new" / "sub" / "m.onnx"))  # fmt: skip
    assert r.returncode == 2 and "nodata" in r.stderr
    assert not (tmp_path / "new").exists()
    out = export_onnx(shipped, tmp_path / "new" / "sub" / "m.onnx")  # made when the graph is written
    assert out.is_file()


def test_int8_calibration_on_some_of_the_training_patients_is_said(shipped, lgg_root, tmp_path):
    """`export --int8 --data` with some training patients missing calibrated on the others, silently."""
    from tumorseg.export import calibration_slices

    train = load_checkpoint(shipped).meta["split"]["train"]
    data = tmp_path / "some"
    data.mkdir()
    (data / train[0]).symlink_to(lgg_root / train[0], target_is_directory=True)
    said: list[str] = []
    images, ids = calibration_slices(shipped, data, log=said.append)
    assert ids == [train[0]] and len(images)
    assert len(said) == 1 and f"{len(train) - 1} of the checkpoint's {len(train)} training patients" in said[0]
    said.clear()
    calibration_slices(shipped, lgg_root, log=said.append)
    assert said == []


def test_export_options_that_would_mislead_are_refused(shipped, tmp_path):
    """An fp32 graph written under the int8 name once exited 0 (predict then called it 'another
    format'), and --data without --int8 was ignored without a word."""
    r = cli_export("--weights", str(shipped), "--out", str(tmp_path / "model.int8.onnx"))
    assert r.returncode == 2 and "add --int8" in r.stderr and not (tmp_path / "model.int8.onnx").exists()
    r = cli_export("--weights", str(shipped), "--out", str(tmp_path / "m.onnx"), "--data", str(tmp_path))
    assert r.returncode == 2 and "--data is read only by --int8" in r.stderr and not (tmp_path / "m.onnx").exists()


def test_a_failed_int8_write_names_the_graph_not_a_temporary_file(shipped, lgg_root, tmp_path):
    """A full disk during `export --int8` once named `.m.int8.onnx.<pid>.fp32.onnx`, a file the user never asked for."""
    import resource

    def limited() -> None:  # files may grow to 1 MB; a larger write fails with EFBIG, as on a full disk
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    train = load_checkpoint(shipped).meta["split"]["train"]
    data = tmp_path / "some"
    data.mkdir()
    (data / train[0]).symlink_to(lgg_root / train[0], target_is_directory=True)
    out = tmp_path / "out" / "m.int8.onnx"
    r = subprocess.run([sys.executable, "-m", "tumorseg", "export", "--weights", str(shipped), "--int8", "--data",
                        str(data), "--out", str(out)], capture_output=True, text=True, timeout=300,
                       preexec_fn=limited)  # fmt: skip
    assert r.returncode == 2 and f"error: {out}: cannot write the graph" in r.stderr, r.stderr
    assert ".fp32.onnx" not in r.stderr and not list(out.parent.iterdir())


def test_a_full_disk_while_quantizing_names_the_graph_asked_for(shipped, lgg_root, tmp_path, monkeypatch):
    """The quantizing step once named its own temporary `.quant` file when a write failed."""
    import errno

    import onnxruntime.quantization

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", full)  # the disk fills as it writes
    train = load_checkpoint(shipped).meta["split"]["train"]
    data = tmp_path / "some"
    data.mkdir()
    (data / train[0]).symlink_to(lgg_root / train[0], target_is_directory=True)
    out = tmp_path / "out" / "m.int8.onnx"
    with pytest.raises(TumorsegError) as e:
        export_int8(shipped, out, data)
    assert str(e.value) == f"{out}: cannot write the graph (No space left on device)"
    assert not list(out.parent.iterdir())


def test_an_unwritable_onnx_cache_says_how_to_move_it(shipped, tmp_path, monkeypatch):
    """--backend onnx with a cache folder that cannot be made once named only the graph's path."""
    from tumorseg.export import cached_onnx

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TUMORSEG_CACHE", str(blocker / "cache"))
    with pytest.raises(TumorsegError, match="set TUMORSEG_CACHE to a folder that can be written"):
        cached_onnx(shipped)


def test_sigterm_during_an_int8_export_leaves_no_temporary_file_and_exits_143(shipped, lgg_root, tmp_path):
    """`kill` or a scheduler's SIGTERM once ended an export at once, leaving its hidden 8 MB
    temporaries (named by process id, so never removed) beside the output. It now stops as Ctrl-C
    does, and a 250-letter output name (once "File name too long" from the nested temporaries) is
    accepted."""
    import signal
    import time

    out = tmp_path / "o" / ("k" * 245 + ".onnx")
    cmd = [sys.executable, "-m", "tumorseg", "export", "--weights", str(shipped), "--int8", "--data", str(lgg_root),
           "--out", str(out)]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.parent.glob(".tumorseg-int8-*/fp32.onnx")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()[1]
    p.send_signal(signal.SIGTERM)  # at once: the quantization after it takes seconds here, less elsewhere
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "interrupted" in err and "Traceback" not in err, err
    assert list(out.parent.iterdir()) == []
    r = cli_export("--weights", str(shipped), "--out", str(out))  # the long name itself is fine
    assert r.returncode == 0 and out.is_file() and len(list(out.parent.iterdir())) == 1, r.stderr
