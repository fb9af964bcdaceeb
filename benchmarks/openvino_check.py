"""OpenVINO against ONNX Runtime on the shipped ONNX graphs: images/s, and how far OpenVINO's probabilities are.

usage: python benchmarks/openvino_check.py [--data ../shared/data/lgg] [--fp32 GRAPH] [--int8 GRAPH]
           [--patients 3] [--batch 16] [--batches 4] [--reps 7] [--threads 2] [--out PATH]

Standalone: it needs openvino, onnxruntime, numpy and pillow (tifffile for .tif slices, onnx for the
attribution), not torch or tumorseg, so it runs from a venv of its own:

    python3 -m venv /tmp/ov/venv
    /tmp/ov/venv/bin/pip install openvino onnxruntime onnx numpy pillow tifffile
    /tmp/ov/venv/bin/python benchmarks/openvino_check.py --out /tmp/ov/openvino.json

The fp32 graph is not shipped: --fp32 defaults to weights/tumorseg-lgg-unet.onnx where it exists, else
to the copy the `onnx` backend caches ($TUMORSEG_CACHE or ~/.cache/tumorseg, named
tumorseg-lgg-unet-<first 16 hex digits of the weights' SHA-256>.onnx); `tumorseg export --out X.onnx`
makes one. The int8 graph is weights/tumorseg-lgg-unet.int8.onnx.

Every graph runs on the CPU with --threads threads (ONNX Runtime intra_op_num_threads, OpenVINO
INFERENCE_NUM_THREADS), on the same real slices: every slice of the first --patients test patients
of the shipped checkpoint's split, read as the files hold them (uint8, channels first). Speed: a pass
is the first --batches batches of --batch slices; one warm-up pass, then --reps timed passes with the
runtimes taking turns, so that a neighbour's burst on a shared machine hits them alike; images/s is
from the median pass. Parity is exact: every slice, in batches of --batch, against ONNX Runtime fp32.

OpenVINO runs twice: with its default inference precision, which is bf16 on a CPU with AVX512-BF16
or AMX (f32 elsewhere), and with INFERENCE_PRECISION_HINT=f32; the precision it ran each kind of
layer in is recorded. Where OpenVINO is more than 1e-3 from ONNX Runtime, each part of the graph
(percentile scaling and resize to 128, the resize alone, U-Net and sigmoid, resize back) runs in
OpenVINO alone, fed ONNX Runtime's input to it, with the rest in ONNX Runtime, to say which part the
difference comes from. The int8 graph uses ONNX Runtime's own QLinearConcat: where OpenVINO cannot
load it, the reasons its ONNX front end gives are recorded instead.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import re
import struct
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "tumorseg-lgg-unet.safetensors"
SIMD_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")  # as tumorseg.hardware
SLICE_SUFFIXES = (".png", ".tif", ".tiff")
_NUMBER = re.compile(r"_(\d+)$")
FAR = 1e-3  # a probability difference above this is not rounding: look for the step that makes it


def cpu() -> dict:
    """The CPU's model and the SIMD features that decide these numbers (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine()}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", "").split()
    return {"model": fields.get("model name", ""), "features": [f for f in SIMD_FEATURES if f in flags],
            "cores": os.cpu_count() or 1}  # fmt: skip


def checkpoint_meta(weights: Path) -> dict:
    """The safetensors header's `meta` (the split, among others), read without torch; {} if unreadable."""
    try:
        with weights.open("rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        return json.loads(header["__metadata__"]["meta"])
    except (OSError, KeyError, ValueError, struct.error):
        return {}


def default_fp32(weights: Path) -> Path:
    """weights/<stem>.onnx if there, else the cache entry the `onnx` backend makes (tumorseg.export.cached_onnx)."""
    beside = weights.with_suffix(".onnx")
    if beside.is_file():
        return beside
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("TUMORSEG_CACHE", Path.home() / ".cache" / "tumorseg"))
    return cache / f"{weights.stem}-{digest}.onnx"


def slice_number(path: Path) -> tuple[int, str]:
    m = _NUMBER.search(path.stem)
    return (int(m.group(1)) if m else -1, path.stem)


def read_slice(path: Path) -> np.ndarray:
    """One slice as uint8 HxWx3, as the file holds it (a grayscale slice repeated into 3 channels)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        img = tifffile.imread(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    if img.dtype != np.uint8:
        raise SystemExit(f"{path}: {img.dtype} slice; this check reads uint8 slices only")
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]


def load_slices(data: Path, patients: int, channels: int, flair_only: bool) -> tuple[list[str], np.ndarray]:
    """Every slice of the first `patients` test patients of the shipped split (sorted folders where
    the checkpoint names none), stacked uint8 (S, C, H, W)."""
    test = checkpoint_meta(WEIGHTS).get("split", {}).get("test") or sorted(p.name for p in data.iterdir())
    ids = [i for i in sorted(test) if (data / i).is_dir()][:patients]
    if not ids:
        raise SystemExit(f"{data}: none of the test patients' folders is there")
    images = []
    for i in ids:
        files = sorted((p for p in (data / i).iterdir() if p.suffix.lower() in SLICE_SUFFIXES
                        and not p.stem.endswith("_mask")), key=slice_number)  # fmt: skip
        images += [read_slice(p).transpose(2, 0, 1) for p in files]
    x = np.ascontiguousarray(np.stack(images))
    if flair_only:
        x = np.ascontiguousarray(x[:, 1:2])
    if x.shape[1] != channels:
        raise SystemExit(f"the graph takes {channels} channels; the slices give {x.shape[1]}")
    return ids, x


def ort_session(graph: Path | bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as tumorseg.infer
    return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), opts,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def ov_config(threads: int, precision: str | None) -> dict:
    config = {"INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def ov_properties(compiled: ov.CompiledModel) -> dict:
    out = {}
    for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT", "NUM_STREAMS",
                "ENABLE_CPU_PINNING", "EXECUTION_MODE_HINT"):  # fmt: skip
        try:
            value = compiled.get_property(key)
        except RuntimeError:
            continue
        out[key] = value.get_type_name() if isinstance(value, ov.Type) else str(value)  # "bf16", not "<Type: ...>"
    return out


def runtime_precisions(compiled: ov.CompiledModel) -> dict[str, int]:
    """How many of the compiled graph's layers of each kind ran in each precision ("Convolution bf16": 19)."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if kind in ("Const", "Input", "Output", "Reorder", "Reshape", "ShapeOf", "StridedSlice"):
            continue
        counts[f"{kind} {info['runtimePrecision'].astype(str) if 'runtimePrecision' in info else '?'}"] += 1
    return dict(sorted(counts.items()))


def conversion_failures(lines: list[str]) -> dict[str, str]:
    """OpenVINO's ONNX front-end report, one entry per op that failed: "QLinearConv-18 (node X)": its reason."""
    out: dict[str, list[str]] = {}
    op = None
    for line in lines:
        if line.startswith("Summary:"):
            break
        if line.startswith("-- ") and line.endswith("with a message:"):
            op = line[3:].split(" with a message")[0]
            out[op] = []
        elif op:
            out[op].append(line)
    reasons = {}
    for op, block in out.items():
        node = next((m.group(1) for line in block if (m := re.search(r"<Node\((?:\w+)\): ([^>]+)>", line))), "?")
        reasons[f"{op} (node {node})"] = block[-1] if block else ""
    return reasons


def batches(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def ort_run(session: ort.InferenceSession):
    name = session.get_inputs()[0].name
    return lambda b: session.run(None, {name: b})[0]


def ov_run(compiled: ov.CompiledModel):
    request = compiled.create_infer_request()
    return lambda b: request.infer({0: b})[0]  # a copy of the output, as ONNX Runtime returns one


def timed_passes(runs: dict, passes: list[np.ndarray], reps: int) -> dict[str, list[float]]:
    """Seconds per pass over `passes` of each run: one warm-up each, then `reps` rounds taking turns."""
    for fn in runs.values():
        for b in passes:
            fn(b)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            t = time.perf_counter()
            for b in passes:
                fn(b)
            times[name].append(time.perf_counter() - t)
    return times


def difference(a: np.ndarray, b: np.ndarray, threshold: float | None = 0.5) -> dict:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).ravel()
    out = {"max_abs": float(d.max()), "p99_9_abs": float(np.quantile(d, 0.999)), "mean_abs": float(d.mean()),
           "values": int(d.size)}  # fmt: skip
    if threshold is not None:
        flips = int(((a > threshold) != (b > threshold)).sum())
        out |= {"decisions_differing": flips, "decisions_differing_fraction": flips / d.size}
    return out


def graph_parts(graph: Path) -> dict[str, tuple[list[str], str]]:
    """The parts of a tumorseg fp32 graph, found by op type: {what: (input tensors, output tensor)}.

    Cut where a cut leaves OpenVINO's choice of precision as it is in the whole graph: a part's
    last step stays bf16 (the resizes; the last convolution, with the sigmoid fused into it), where
    a part ending at the percentile scaling, or at the logits, would run its tail in f32 and hide
    the difference (checked: each part's layer precisions are recorded)."""
    import onnx

    m = onnx.load(str(graph))
    nodes, image, out = m.graph.node, m.graph.input[0].name, m.graph.output[0].name
    resizes = [n for n in nodes if n.op_type == "Resize"]
    sigmoid = next(n for n in nodes if n.op_type == "Sigmoid")
    scaled, net_in, small = resizes[0].input[0], resizes[0].output[0], sigmoid.output[0]
    return {
        "percentile scaling (Cast, Div, TopK, Gather, lerp, Clip) + resize to 128": ([image], net_in),
        "resize to 128 alone (Resize, bilinear; fed ONNX Runtime's scaled slices)": ([scaled], net_in),
        "U-Net + sigmoid (Conv, ConvTranspose, MaxPool, Concat, Relu, Sigmoid)": ([net_in], small),
        "resize back to the slice's size (Resize, bilinear)": ([small, image], out),
    }


def to_bf16(v: float) -> float:
    """`v` rounded to bfloat16 (to nearest, ties to even), as a float."""
    b = int(np.array(v, np.float32).view(np.uint32))
    return float(np.array((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000, np.uint32).view(np.float32))


def rank_in_bf16(model, pixels: int):
    """`model` with nothing changed but the percentile's rank, q * (H*W - 1) (the Mul before the Floor),
    computed from bf16-rounded inputs and rounded to bf16, as OpenVINO's bf16 mode computes it; and the
    ranks for `pixels` = H*W. None where the graph has no such Mul."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [copy.deepcopy(n) for n in model.graph.node]  # kept valid once the graph's own are deleted
    floor = next((n for n in nodes if n.op_type == "Floor"), None)
    at = next((k for k, n in enumerate(nodes) if floor and n.op_type == "Mul" and floor.input[0] in n.output), None)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    if at is None or not any(i in consts and consts[i].size == 1 for i in nodes[at].input):
        return None
    mul, q = nodes[at], float(next(consts[i] for i in nodes[at].input if i in consts))
    rank = mul.output[0]

    def via_bf16(src: str, dst: str) -> list:
        return [helper.make_node("Cast", [src], [src + "_bf16"], to=TensorProto.BFLOAT16),
                helper.make_node("Cast", [src + "_bf16"], [dst], to=TensorProto.FLOAT)]  # fmt: skip

    a, b = mul.input
    rounded = via_bf16(a, a + "_as_bf16") + via_bf16(b, b + "_as_bf16")
    rounded += [helper.make_node("Mul", [a + "_as_bf16", b + "_as_bf16"], [rank + "_exact"])]
    rounded += via_bf16(rank + "_exact", rank)
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + rounded + nodes[at + 1 :])
    exact, bf16 = q * (pixels - 1), to_bf16(to_bf16(q) * to_bf16(pixels - 1))
    return model, {"q": q, "pixels": pixels, "rank": exact, "rank_bf16": bf16,
                   "percentile_used_bf16": 100 * bf16 / (pixels - 1)}  # fmt: skip


def attribute(graph: Path, x: np.ndarray, batch: int, threads: int, precision: str | None, bf16: bool) -> dict:
    """Where OpenVINO's difference from ONNX Runtime comes from: each part of the graph run in
    OpenVINO alone, fed ONNX Runtime's own input to it, and the rest in ONNX Runtime, over every
    slice of `x`. Per part: how far its own output is, how far that leaves the probabilities, and
    the precision OpenVINO ran its layers in (the same as in the whole graph: see graph_parts).
    With `bf16`, also ONNX Runtime in fp32 with only the percentile's rank rounded to bf16."""
    import onnx
    from onnx.utils import extract_model

    parts = graph_parts(graph)
    model = onnx.load(str(graph))
    image, out = model.graph.input[0].name, model.graph.output[0].name
    between = sorted({t for ins, o in parts.values() for t in [*ins, o]} - {image, out})
    known = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(known[t] for t in between)  # ONNX Runtime is fp32 throughout: this changes nothing
    full = ort_session(model.SerializeToString(), threads)
    names = [o.name for o in full.get_outputs()]
    ref: dict[str, list[np.ndarray]] = {n: [] for n in [image, *names]}
    for b in batches(x, batch):
        ref[image].append(b)
        for n, v in zip(names, full.run(None, {image: b})):
            ref[n].append(v)
    result: dict = {"parts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for what, (inputs, output) in parts.items():
            extract_model(str(graph), f"{tmp}/part.onnx", inputs, [output])
            compiled = ov.Core().compile_model(f"{tmp}/part.onnx", "CPU", ov_config(threads, precision))
            request = compiled.create_infer_request()
            mine = [request.infer({i: ref[i][k] for i in inputs})[0] for k in range(len(ref[image]))]
            if output == out:
                probs = mine
            else:  # the rest of the graph in ONNX Runtime, from OpenVINO's output of this part
                extract_model(str(graph), f"{tmp}/rest.onnx", [output, image], [out])
                rest = ort_session(Path(f"{tmp}/rest.onnx"), threads)
                probs = [rest.run(None, {output: m, image: ref[image][k]})[0] for k, m in enumerate(mine)]
            result["parts"][what] = {
                "layer_precisions": runtime_precisions(compiled),
                "own_output": difference(np.concatenate(ref[output]), np.concatenate(mine), None),
                "probability": difference(np.concatenate(ref[out]), np.concatenate(probs)),
            }
    changed = rank_in_bf16(model, x.shape[2] * x.shape[3]) if bf16 else None
    if changed:
        session = ort_session(changed[0].SerializeToString(), threads)
        runs = [dict(zip(names, session.run(None, {image: b}))) for b in ref[image]]
        net_in = parts[next(iter(parts))][1]
        result["percentile_rank_in_bf16"] = changed[1] | {
            "network_input": difference(np.concatenate(ref[net_in]), np.concatenate([r[net_in] for r in runs]), None),
            "probability": difference(np.concatenate(ref[out]), np.concatenate([r[out] for r in runs])),
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "lgg")
    ap.add_argument("--fp32", type=Path, default=None, help="the fp32 graph (default: see above)")
    ap.add_argument("--int8", type=Path, default=ROOT / "weights" / "tumorseg-lgg-unet.int8.onnx")
    ap.add_argument("--patients", type=int, default=3, help="how many test patients' slices (all of each)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=4, help="batches per timed pass")
    ap.add_argument("--reps", type=int, default=7, help="timed passes per runtime")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "openvino-vm.json")
    args = ap.parse_args()
    fp32 = args.fp32 or default_fp32(WEIGHTS)
    if not fp32.is_file():
        raise SystemExit(f"{fp32}: no fp32 graph; make one with `tumorseg export --out {fp32}` or pass --fp32")
    reference = ort_session(fp32, args.threads)
    meta = reference.get_modelmeta().custom_metadata_map
    if meta.get("tumorseg.context", "0") != "0":
        raise SystemExit(f"{fp32}: a 2.5D graph (context {meta['tumorseg.context']}); this check feeds plain slices")
    channels = reference.get_inputs()[0].shape[1]
    ids, x = load_slices(args.data, args.patients, channels, meta.get("tumorseg.channels") == "flair")
    print(f"{len(x)} slices of {len(ids)} test patients ({', '.join(ids)}), {x.shape[1:]} uint8; "
          f"graph input {reference.get_inputs()[0].shape}, network at {meta.get('tumorseg.image_size')}")  # fmt: skip

    runs, info = {"onnxruntime fp32": ort_run(reference)}, {"onnxruntime fp32": {"graph": fp32.name}}
    core, compiled = ov.Core(), {}
    for label, precision in (("openvino fp32 graph, default precision", None),
                             ("openvino fp32 graph, INFERENCE_PRECISION_HINT=f32", "f32")):  # fmt: skip
        compiled[label] = core.compile_model(str(fp32), "CPU", ov_config(args.threads, precision))
    failed = {}
    if args.int8.is_file():
        runs["onnxruntime int8"] = ort_run(ort_session(args.int8, args.threads))
        info["onnxruntime int8"] = {"graph": args.int8.name}
        try:
            compiled["openvino int8 graph"] = core.compile_model(str(args.int8), "CPU", ov_config(args.threads, None))
        except RuntimeError as e:  # the OpenVINO front end cannot convert it: say which ops, keep going
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            summary = [line for line in lines if "Conversion is failed for" in line] or lines[-1:]
            failed["openvino int8 graph"] = {"graph": args.int8.name, "error": summary[0].lstrip("- "),
                                             "reasons": conversion_failures(lines), "message": str(e)}  # fmt: skip
    for label, model in compiled.items():
        runs[label] = ov_run(model)
        info[label] = {"graph": (args.int8 if "int8" in label else fp32).name, "properties": ov_properties(model)}

    # parity: every slice, each runtime against ONNX Runtime fp32
    probs = {label: np.concatenate([fn(b) for b in batches(x, args.batch)]) for label, fn in runs.items()}
    for label in runs:
        if label != "onnxruntime fp32":
            info[label]["vs_onnxruntime_fp32"] = difference(probs["onnxruntime fp32"], probs[label])
    for label, model in compiled.items():  # after they ran: a dynamic graph is compiled for its shapes then
        info[label]["layer_precisions"] = runtime_precisions(model)

    # speed
    passes = batches(x, args.batch)[: args.batches]
    images = sum(len(b) for b in passes)
    for label, seconds in timed_passes(runs, passes, args.reps).items():
        info[label] |= {"images_per_s": images / float(np.median(seconds)),
                        "images_per_s_range": [images / max(seconds), images / min(seconds)]}  # fmt: skip

    # attribution, where OpenVINO is far from ONNX Runtime on the fp32 graph
    attribution = {}
    for label, precision in (("openvino fp32 graph, default precision", None),
                             ("openvino fp32 graph, INFERENCE_PRECISION_HINT=f32", "f32")):  # fmt: skip
        if info[label]["vs_onnxruntime_fp32"]["max_abs"] > FAR:
            bf16 = info[label]["properties"].get("INFERENCE_PRECISION_HINT") == "bf16"
            try:
                attribution[label] = attribute(fp32, x, args.batch, args.threads, precision, bf16)
            except ImportError:
                attribution[label] = {"skipped": "needs the onnx package"}

    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu(),
        "python": platform.python_version(),
        "openvino": ov.get_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "threads": args.threads,
        "graph_metadata": {k: v for k, v in meta.items() if k != "tumorseg.calibration"},
        "patients": ids,
        "slices": len(x),
        "slice_shape": list(x.shape[1:]),
        "batch": args.batch,
        "timed_pass_images": images,
        "reps": args.reps,
        "runtimes": info,
        "not_run": failed,
        "attribution": attribution,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    c = result["cpu"]
    print(f"CPU: {c.get('model')}; {' '.join(c.get('features', []))}; {args.threads} threads; "
          f"OpenVINO {result['openvino']}; ONNX Runtime {result['onnxruntime']}")  # fmt: skip
    print(f"{'runtime':<52}{'precision':>10}{'img/s':>8}{'range':>14}{'max |dp|':>10}{'p99.9':>9}{'0.5 flips':>18}")
    for label, r in info.items():
        precision = r.get("properties", {}).get("INFERENCE_PRECISION_HINT", "int8" if "int8" in label else "f32")
        lo, hi = r["images_per_s_range"]
        d = r.get("vs_onnxruntime_fp32")
        vs = (f"{d['max_abs']:>10.2e}{d['p99_9_abs']:>9.1e}{d['decisions_differing']:>9} "
              f"({100 * d['decisions_differing_fraction']:.4f}%)" if d else f"{'(reference)':>19}")  # fmt: skip
        print(f"{label:<52}{precision:>10}{r['images_per_s']:>8.1f}{f'{lo:.0f}-{hi:.0f}':>14}{vs}")
    for label, r in failed.items():
        print(f"{label:<52} not run: {r['error']}")
        for op, reason in r["reasons"].items():
            print(f"    {op}: {reason}")
    print(f"img/s: {images} slices per pass (batch {args.batch}), median of {args.reps} passes; "
          f"max |dp|, p99.9, flips: against ONNX Runtime fp32 over all {x.shape[0] * x.shape[2] * x.shape[3]:,} "
          "pixels (flips: pixels on the other side of 0.5)")  # fmt: skip
    for label, a in attribution.items():
        if "skipped" in a:
            print(f"{label}: attribution skipped ({a['skipped']})")
            continue
        print(f"\nwhere '{label}' differs: each part in OpenVINO alone (fed ONNX Runtime's input), the rest in "
              "ONNX Runtime; against ONNX Runtime fp32, all pixels")  # fmt: skip
        print(f"{'part':<76}{'OV ran':>8}{'own |d|':>10}{'max |dp|':>10}{'p99.9':>9}{'0.5 flips':>11}")
        for what, r in a["parts"].items():
            ran = "/".join(sorted({k.split()[-1] for k in r["layer_precisions"]} - {"i32", "u8"}))
            d = r["probability"]
            print(f"{what:<76}{ran:>8}{r['own_output']['max_abs']:>10.2e}{d['max_abs']:>10.2e}"
                  f"{d['p99_9_abs']:>9.1e}{d['decisions_differing']:>11}")  # fmt: skip
        if "percentile_rank_in_bf16" in a:
            r, d = a["percentile_rank_in_bf16"], a["percentile_rank_in_bf16"]["probability"]
            what = "ONNX Runtime fp32 but the percentile's rank q*(H*W-1) rounded to bf16"
            print(f"{what:<76}{'-':>8}{r['network_input']['max_abs']:>10.2e}{d['max_abs']:>10.2e}"
                  f"{d['p99_9_abs']:>9.1e}{d['decisions_differing']:>11}")  # fmt: skip
            rank = f"rank {r['rank']:.2f} in fp32, {r['rank_bf16']:.0f} in bf16"
            used = f"so the {r['percentile_used_bf16']:.2f}th percentile"
            print(f"  (q {r['q']:g} at {r['pixels']} pixels: {rank}, {used}; own |d|: the network's input)")
    for label, r in info.items():
        if "layer_precisions" in r:
            print(f"{label}: layers ran in {r['layer_precisions']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
