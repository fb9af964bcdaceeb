"""ONNX export: preprocessing inside the graph, parity with PyTorch on real slices."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from conftest import cli_here

from tumorseg.data.lgg import find_cases, load_case  # noqa: E402
from tumorseg.infer import Predictor  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    r = cli_here("export", "--weights", str(tiny_run / "last.safetensors"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_graph_contract(exported):
    s = session(exported)
    (inp,), (out,) = s.get_inputs(), s.get_outputs()
    assert inp.name == "image" and inp.type == "tensor(uint8)"
    assert out.name == "probability" and out.type == "tensor(float)"
    assert isinstance(inp.shape[0], str) and isinstance(inp.shape[2], str) and isinstance(inp.shape[3], str)


def test_parity_with_pytorch_on_real_slices(exported, tiny_run, lgg_root):
    case = load_case(find_cases(lgg_root / "TCGA_CS_4941_19960909")[0], None)
    images = case.images[8:16]
    torch_pred = Predictor.from_checkpoint(tiny_run / "last.safetensors", backend="torch")
    s = session(exported)
    onnx_p = s.run(None, {"image": images})[0]
    torch_p = torch_pred.probabilities(images)
    assert onnx_p.shape == (8, 1, 256, 256) and onnx_p.dtype == np.float32
    assert np.abs(onnx_p[:, 0] - torch_p).max() < 1e-4
    assert np.array_equal(onnx_p[:, 0] > 0.5, torch_p > 0.5)
    # any size: a crop of 200x176 comes back at 200x176
    crop = np.ascontiguousarray(images[:2, :, 20:220, 40:216])
    assert np.abs(s.run(None, {"image": crop})[0][:, 0] - torch_pred.probabilities(crop)).max() < 1e-4


def test_every_backend_reads_the_same_dtypes(tiny_run, lgg_root, tmp_path):
    """Integers within 0-255 give the uint8 answer on both backends; floats and out-of-range
    values are refused with the reason, never read as something else by one backend."""
    from tumorseg.errors import TumorsegError

    case = load_case(find_cases(lgg_root / "TCGA_CS_4941_19960909")[0], None)
    images = case.images[10:12]
    weights = tmp_path / "model.safetensors"
    weights.write_bytes((tiny_run / "last.safetensors").read_bytes())
    too_bright = images.astype(np.int64)
    too_bright[0, 0, 0, 0] = 256
    for backend in ("torch", "onnx"):
        pred = Predictor.from_checkpoint(weights, backend=backend)
        want = pred.predict(images)
        np.testing.assert_allclose(pred.predict(images.astype(np.int64)), want, atol=1e-6)
        with pytest.raises(TumorsegError, match="must be uint8 .*got float32"):
            pred.predict(images.astype(np.float32) / 255)
        with pytest.raises(TumorsegError, match="values 0-255 .*got int64 values 0-256"):
            pred.predict(too_bright)


def test_batch_norm_uses_eval_statistics(exported, lgg_root):
    """Each slice's answer is the same alone or in a batch: no batch statistics inside."""
    case = load_case(find_cases(lgg_root / "TCGA_CS_4941_19960909")[0], None)
    s = session(exported)
    batch = s.run(None, {"image": case.images[10:14]})[0]
    alone = s.run(None, {"image": case.images[11:12]})[0]
    np.testing.assert_allclose(batch[1:2], alone, atol=1e-5)


def test_onnx_backend_in_predict_gives_the_same_masks(tiny_run, lgg_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TUMORSEG_CACHE", str(tmp_path / "cache"))
    src = lgg_root / "TCGA_CS_4941_19960909"
    w = tiny_run / "last.safetensors"
    outs = {}
    for backend in ("torch", "onnx"):
        r = cli_here("predict", src, "--out", tmp_path / backend, "--weights", w, "--backend", backend)
        assert r.returncode == 0, r.stderr
        outs[backend] = sorted((tmp_path / backend).glob("*_pred.png"))
    from PIL import Image

    assert len(outs["torch"]) == len(outs["onnx"]) > 0
    for a, b in zip(outs["torch"], outs["onnx"]):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    [cached] = list((tmp_path / "cache").glob("*.onnx"))
    cached.write_bytes(cached.read_bytes()[:1000])  # a broken cache entry (a killed export, a full disk)
    from tumorseg.infer import Predictor

    p = Predictor.from_checkpoint(w, "onnx")  # once failed on every run; now made again
    assert p.backend == "onnx" and cached.stat().st_size > 1000


@pytest.fixture(scope="module")
def tiny_int8(tiny_run, tmp_path_factory):
    """`tumorseg export --int8` of a copy of the tiny model, beside it, calibrated on its data."""
    import shutil

    w = tmp_path_factory.mktemp("int8") / "tiny.safetensors"
    shutil.copy(tiny_run / "last.safetensors", w)
    out = w.with_name("tiny.int8.onnx")
    r = cli_here("export", "--int8", "--weights", str(w), "--data", str(tiny_run.parent / "lgg"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"wrote {out} ({round(out.stat().st_size / 1e3)} kB)" in r.stdout  # once "(0.0 MB)"
    return out


def test_int8_graph_contract_and_provenance(tiny_int8, tiny_run):
    import onnx

    from tumorseg.checkpoint import load_checkpoint
    from tumorseg.export import file_sha256

    model = onnx.load(str(tiny_int8))
    ops = {n.op_type for n in model.graph.node}
    assert "QLinearConv" in ops and "TopK" in ops and "Resize" in ops  # int8 convs, fp32 preprocessing
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops and "QLinearConcat" in ops  # int8 up path too
    props = {p.key: p.value for p in model.metadata_props}
    assert props["tumorseg.source_sha256"] == file_sha256(tiny_int8.with_name("tiny.safetensors"))
    train = load_checkpoint(tiny_run / "last.safetensors").meta["split"]["train"]
    assert props["tumorseg.calibration"] and set(props["tumorseg.calibration"].split()) <= set(train)
    s = session(tiny_int8)
    (inp,), (out,) = s.get_inputs(), s.get_outputs()
    assert inp.type == "tensor(uint8)" and out.type == "tensor(float)"
    p = s.run(None, {"image": np.zeros((2, 3, 200, 176), np.uint8)})[0]
    assert p.shape == (2, 1, 200, 176) and 0 <= p.min() and p.max() <= 1


def test_int8_export_needs_data(tiny_run, tmp_path):
    r = cli_here("export", "--int8", "--weights", tiny_run / "last.safetensors", "--out", tmp_path / "m.onnx")
    assert r.returncode == 2 and "--data" in r.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_auto_backend_and_stale_int8_graph(tiny_int8, tiny_run, tmp_path, capfd):
    import shutil

    from tumorseg.errors import TumorsegError
    from tumorseg.infer import resolve_backend

    weights = tiny_int8.with_name("tiny.safetensors")
    assert resolve_backend("auto", weights) == "onnx-int8"
    assert Predictor.from_checkpoint(weights).backend == "onnx-int8"
    lone = tmp_path / "lone.safetensors"
    shutil.copy(tiny_run / "last.safetensors", lone)
    assert resolve_backend("auto", lone) == "torch"  # no int8 graph beside it: no export on the fly
    with pytest.raises(TumorsegError, match="export --int8"):
        Predictor.from_checkpoint(lone, backend="onnx-int8")
    # a graph made from other weights is refused, not silently used
    other = tmp_path / "other.safetensors"
    shutil.copy(tiny_run / "best.safetensors", other)
    shutil.copy(tiny_int8, tmp_path / "other.int8.onnx")
    with pytest.raises(TumorsegError, match="other weights"):
        Predictor.from_checkpoint(other, backend="onnx-int8")
    assert resolve_backend("auto", other) == "torch"  # auto never runs a stale graph, and says so plainly
    said = capfd.readouterr().err
    assert said.startswith("warning: using the torch backend:") and "other weights" in said and ".py:" not in said
    (tmp_path / "lone.int8.onnx").write_bytes(b"not onnx")
    with pytest.raises(TumorsegError, match="lone.int8.onnx"):
        Predictor.from_checkpoint(lone, backend="onnx-int8")


def test_int8_graph_without_contract_is_refused(tiny_int8, tmp_path):
    """A graph with provenance but no input contract (what an early export wrote) is not used."""
    import shutil

    import onnx

    from tumorseg.errors import TumorsegError
    from tumorseg.infer import int8_graph, resolve_backend

    weights = tmp_path / "early.safetensors"
    shutil.copy(tiny_int8.with_name("tiny.safetensors"), weights)
    model = onnx.load(str(tiny_int8))
    kept = {p.key: p.value for p in model.metadata_props if p.key != "tumorseg.in_channels"}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, kept)
    onnx.save(model, str(tmp_path / "early.int8.onnx"))
    with pytest.raises(TumorsegError, match=r"early.int8.onnx: lacks its input contract metadata \(tumorseg.in_chan"):
        int8_graph(weights)
    assert resolve_backend("auto", weights) == "torch"


def test_a_damaged_or_edited_graph_is_refused_or_made_again(tiny_int8, exported, tmp_path, monkeypatch, capfd):
    """A graph with one weight tensor zeroed (its metadata intact) once ran without a word: masks
    shrank, exit 0. The int8 graph is now refused (auto says so and uses torch); a cached fp32 graph
    is made again."""
    import shutil

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from tumorseg.errors import TumorsegError
    from tumorseg.export import cached_onnx, graph_intact
    from tumorseg.infer import int8_graph, resolve_backend

    weights = tmp_path / "w.safetensors"
    shutil.copy(tiny_int8.with_name("tiny.safetensors"), weights)
    model = onnx.load(str(tiny_int8))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(tmp_path / "w.int8.onnx"))
    with pytest.raises(TumorsegError, match=r"w.int8.onnx: its graph is not the one its export recorded"):
        int8_graph(weights)
    assert resolve_backend("auto", weights) == "torch" and "damaged or edited" in capfd.readouterr().err
    shutil.copy(tiny_int8, tmp_path / "w.int8.onnx")  # the graph as exported is used
    assert int8_graph(weights) == tmp_path / "w.int8.onnx"

    monkeypatch.setenv("TUMORSEG_CACHE", str(tmp_path / "cache"))
    src = tiny_int8.with_name("tiny.safetensors")
    cached = cached_onnx(src)
    assert graph_intact(cached) and not graph_intact(tiny_int8.with_name("nothing.onnx"))
    fp32 = onnx.load(str(cached))
    init = max(fp32.graph.initializer, key=lambda t: np.prod(t.dims))
    init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    onnx.save(fp32, str(cached))
    assert not graph_intact(cached)
    assert cached_onnx(src) == cached and graph_intact(cached)  # made again


def test_graphs_carry_no_debug_traces_so_a_re_export_is_the_same_file(exported, tiny_int8, tiny_run, tmp_path):
    """The exporter wrote each node's source file and line into the graph: the shipped graph named
    /work/main/src/..., and a re-export after an edit elsewhere in export.py differed in bytes."""
    import onnx

    for path in (exported, tiny_int8):
        data = path.read_bytes()
        assert b"export.py" not in data and b"stack_trace" not in data, path.name
        model = onnx.load(str(path))
        assert not model.graph.metadata_props and not any(n.metadata_props for n in model.graph.node)
    again = tmp_path / "again.onnx"
    assert cli_here("export", "--weights", str(tiny_run / "last.safetensors"), "--out", str(again)).returncode == 0
    assert again.read_bytes() == exported.read_bytes()


def test_shipped_int8_graph_carries_its_contract():
    """The shipped graph is the current export of the shipped weights, contract included."""
    import onnx

    from tumorseg.checkpoint import load_checkpoint
    from tumorseg.export import CONTRACT_KEYS, contract_metadata
    from tumorseg.infer import default_weights, int8_graph

    weights = default_weights()
    assert b"stack_trace" not in int8_graph(weights).read_bytes()  # made by the current export, as it is shipped
    props = {p.key: p.value for p in onnx.load(str(int8_graph(weights)), load_external_data=False).metadata_props}
    expected = contract_metadata(load_checkpoint(weights).config.model)
    assert set(expected) == set(CONTRACT_KEYS)
    assert {k: props.get(k) for k in expected} == expected


def test_the_onnx_cache_keeps_the_most_recently_used_graphs(tiny_int8, tmp_path, monkeypatch):
    """~/.cache/tumorseg once grew by one graph per checkpoint ever run with --backend onnx."""
    import os

    from tumorseg import export

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("TUMORSEG_CACHE", str(cache))
    monkeypatch.setattr(export, "CACHE_KEEP", 3)
    old = [cache / f"old-{i:016x}.onnx" for i in range(4)]
    for i, path in enumerate([*old, cache / "mine.onnx"]):  # a file of the user's, not a cached graph
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    os.utime(old[0], None)  # used just now: kept
    made = export.cached_onnx(tiny_int8.with_name("tiny.safetensors"))
    assert sorted(cache.glob("*.onnx")) == sorted([made, old[0], old[3], cache / "mine.onnx"])
    os.utime(made, (1, 1))
    assert export.cached_onnx(tiny_int8.with_name("tiny.safetensors")) == made and made.stat().st_mtime > 1
