"""A copy installed without the medical extra (nibabel, pydicom): NIfTI and DICOM inputs get one
clear line naming the file and the extra (once a ModuleNotFoundError traceback, and a 500)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import case_nifti

pytest.importorskip("nibabel")  # to write the test volume


def without(tmp_path: Path, *modules: str) -> dict:
    """An environment whose Python cannot import `modules`."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def without_medical(tmp_path: Path) -> dict:
    return without(tmp_path, "nibabel", "pydicom")


def test_predict_and_evaluate_name_the_medical_extra(lgg_root, tmp_path, without_medical):
    scan, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 13), tmp_path / "scan.nii.gz")
    slice_png = next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "tumorseg", *map(str, a)], capture_output=True,  # noqa: E731
                                    text=True, timeout=300, env=without_medical)  # fmt: skip
    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "1.dcm").write_bytes(b"\0" * 128 + b"DICM")
    r = run("predict", scan, slice_png, dicom, "--out", tmp_path / "o")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{scan}: reading NIfTI needs the medical extra: pip install 'tumorseg[medical]'" in r.stderr
    assert f"{dicom}: reading a DICOM series needs the medical extra" in r.stderr
    assert "1 of 3 inputs segmented" in r.stdout  # the slice is still segmented
    r = run("evaluate", "--image", scan, "--mask", scan)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "needs the medical extra" in r.stderr, r.stderr


def test_the_server_answers_a_nifti_upload_with_415(lgg_root, tmp_path, without_medical):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from conftest import start_server

    scan, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 13), tmp_path / "scan.nii.gz")
    url, proc = start_server(env=without_medical)
    try:
        r = httpx.post(url + "/api/v1/segment", files={"file": ("scan.nii.gz", scan.read_bytes())}, timeout=120)
        assert r.status_code == 415, r.text
        assert "needs the medical extra: pip install 'tumorseg[medical]'" in r.json()["error"]
        png = next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png")).read_bytes()
        assert httpx.post(url + "/api/v1/segment", files={"file": ("s.png", png)}, timeout=120).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_int8_backend_is_named_when_onnx_runtime_is_missing(lgg_root, tmp_path):
    """`--backend onnx-int8` without ONNX Runtime once said "backend onnx needs the onnx extra"."""
    slice_png = next((lgg_root / "TCGA_CS_4941_19960909").glob("*_12.png"))
    r = subprocess.run([sys.executable, "-m", "tumorseg", "predict", str(slice_png), "--out", str(tmp_path / "o"),
                        "--backend", "onnx-int8"], capture_output=True, text=True, timeout=300,
                       env=without(tmp_path, "onnxruntime"))  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "backend onnx-int8 needs the onnx extra: pip install 'tumorseg[onnx]'" in r.stderr


def test_nifti_needs_nibabel_alone(lgg_root, tmp_path):
    """With nibabel but not pydicom, a NIfTI is read (a check for both once refused it)."""
    scan, _ = case_nifti(lgg_root, "TCGA_CS_4941_19960909", slice(10, 13), tmp_path / "scan.nii.gz")
    r = subprocess.run([sys.executable, "-m", "tumorseg", "predict", str(scan), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300, env=without(tmp_path, "pydicom"))  # fmt: skip
    assert r.returncode == 0 and "1 of 1 inputs segmented" in r.stdout, r.stderr
