"""Time and answer size of `POST /api/v1/segment` for a volume at the server's limit (512x512x160).

usage: python benchmarks/bench_serve_volume.py [--data ../shared/data/lgg] [--patient ID]
The volume is one real patient's FLAIR, resized to 512x512 and repeated to 160 slices (a
derived copy, written to a temporary folder only). Prints the second of two uploads, and the time
to fetch the three images of one slice, which the server draws when they are asked for.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tumorseg.api.app import create_app
from tumorseg.data.lgg import find_cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lgg")
    ap.add_argument("--patient", default="TCGA_CS_4941_19960909")
    args = ap.parse_args()
    (case,) = find_cases(args.data, ids=[args.patient])
    flair = [np.asarray(Image.open(p).convert("L").resize((512, 512), Image.BILINEAR)) for p in case.images]
    vol = np.stack([flair[i * len(flair) // 160] for i in range(160)], axis=-1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.nii.gz"
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
        data = path.read_bytes()
    client = TestClient(create_app(max_upload=len(data) + 1))
    for _ in range(2):
        t0 = time.perf_counter()
        r = client.post("/api/v1/segment", files={"file": ("v.nii.gz", data)})
        seconds = time.perf_counter() - t0
    r.raise_for_status()
    body = r.json()
    t0 = time.perf_counter()
    for name in ("mri", "mask", "overlay"):  # what the page fetches to show one slice
        client.get(body["slices"][80][name]).raise_for_status()
    shown = time.perf_counter() - t0
    print(f"512x512x160: {seconds:.1f} s in all, {body['runtime_ms'] / 1000:.1f} s of it the model; "
          f"answer {len(r.content) / 1e6:.2f} MB; one slice's 3 images {shown * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
