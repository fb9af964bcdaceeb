"""DICOM series: find them, read one into a Volume, write a mask back as a DICOM SEG."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import DataError
from .io import IMAGE_SUFFIXES, OUTPUT_ENDINGS, VOLUME_SUFFIXES, atomic_write_bytes
from .volume import Volume, is_volume_path, need_medical

DICOM_SUFFIXES = (".dcm", ".ima")  # .IMA: Siemens's own exports


def is_dicom_series(path: Path) -> bool:
    """A folder holding .dcm or .ima files, or other files that start like DICOM."""
    if not path.is_dir():
        return False
    return any(not _never_a_slice(p) and p.is_file() and looks_dicom(p) for p in path.iterdir())  # one read each


def _never_a_slice(p: Path) -> bool:
    """Hidden files (`.DS_Store`, `._IM0001` from macOS copies), `X_seg.dcm` (the SEG an earlier
    `predict` wrote) and DICOMDIR (the media's index)."""
    name = p.name.lower()
    return name.startswith(".") or name.endswith("_seg.dcm") or name == "dicomdir"


def _series_file(p: Path) -> bool:
    """A file that may hold a slice: `.dcm`, `.ima`, no suffix or a UID's last number (PACS exports
    name files `1.2.826.0.1.3680043.8.498.12`; by its name, so one whose marker cannot be read is
    named by the reader, not dropped), or any other name of a file with DICOM's 'DICM' marker;
    never one of `_never_a_slice`, nor an image or volume, which a series folder refuses."""
    if _never_a_slice(p) or not p.is_file():
        return False
    return not p.suffix or p.suffix[1:].isdigit() or looks_dicom(p)


def looks_dicom(p: Path) -> bool:
    """Named `.dcm` or `.ima`, or, under a name that is not an image's or a volume's, starting with
    DICOM's 128-byte preamble and 'DICM' marker."""
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    if p.name.lower().endswith((*IMAGE_SUFFIXES, *VOLUME_SUFFIXES)):
        return False
    try:
        with p.open("rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _positive_mm(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _unread_image(p: Path) -> bool:
    """An image or volume in a DICOM series folder (not one that `predict` wrote there)."""
    name = p.name.lower()
    if name.startswith(".") or name.endswith(OUTPUT_ENDINGS) or not p.is_file():
        return False
    return name.endswith(IMAGE_SUFFIXES) or is_volume_path(p)


def _check_geometry(p: Path, pos: np.ndarray, orient: np.ndarray, spacing: list[float]) -> None:
    """ImagePositionPatient, ImageOrientationPatient (two unit vectors at right angles) and
    PixelSpacing (two positive values) that can place the slice's voxels in the patient."""
    if pos.shape != (3,) or not np.isfinite(pos).all():
        raise DataError(f"{p}: ImagePositionPatient is not three finite numbers: {pos.tolist()}")
    if len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise DataError(f"{p}: PixelSpacing must be two positive sizes in mm, not {spacing}")
    row, col = (orient[:3], orient[3:]) if orient.shape == (6,) and np.isfinite(orient).all() else (None, None)
    if row is None or max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(col) - 1), abs(row @ col)) > 1e-2:
        raise DataError(f"{p}: ImageOrientationPatient is not two unit vectors at right angles: "
                        f"{orient.tolist()} (a degenerate orientation; the slice cannot be placed)")  # fmt: skip


def _series_list(slices: list) -> str:
    """Each series among `slices` as 'its description (N slices, e.g. FILE)', the largest first."""
    by_uid: dict = {}
    for s in slices:
        by_uid.setdefault(s[5], []).append(s)
    parts = []
    for uid, group in sorted(by_uid.items(), key=lambda kv: -len(kv[1])):
        what = str(getattr(group[0][6], "SeriesDescription", "") or "") or f"UID {uid}"
        parts.append(f"{what!r} ({len(group)} slice{'s' * (len(group) > 1)}, e.g. {group[0][0].name})")
    return ", ".join(parts)


def read_dicom_series(folder: str | Path) -> Volume:
    """Read one DICOM series: slices sorted by position along the slice normal (not by file
    name), rescale slope and intercept applied, an affine in RAS+ mm (DICOM's LPS converted).

    Raises DataError for unreadable or colour files, slices that cannot be placed (PixelSpacing,
    ImageOrientationPatient), mixed series, a missing slice, uneven spacing, or an image or volume
    beside the slices. MONOCHROME1 pixels are inverted, so that bright is high.
    """
    need_medical(folder, "reading a DICOM series", ("pydicom", "nibabel"))
    import pydicom

    folder = Path(folder)
    listing = sorted(folder.iterdir())
    files = [p for p in listing if _series_file(p)]
    if not files:
        raise DataError(f"{folder}: no DICOM files found")
    strays = [p.name for p in listing if _unread_image(p)]
    if strays:
        more = f" and {len(strays) - 3} more" if len(strays) > 3 else ""
        raise DataError(f"{folder}: holds images or volumes that are not DICOM ({', '.join(strays[:3])}{more}) "
                        "beside its DICOM slices, which would go unread; move them out of the series folder "
                        "and name them as inputs of their own")  # fmt: skip
    slices, no_pixels = [], []
    for p in files:
        try:
            ds = pydicom.dcmread(p)
            if "PixelData" not in ds:  # a presentation state, report or key object a PACS export puts beside
                no_pixels.append(p.name)
                continue
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            if frames > 1:
                raise DataError(f"{p}: a multi-frame DICOM ({frames} frames in one file) is not read; give a "
                                "series of one file per slice, or convert it to NIfTI (with dcm2niix)")  # fmt: skip
            samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
            if samples != 1:
                raise DataError(f"{p}: a colour DICOM ({samples} samples per pixel, "
                                f"{getattr(ds, 'PhotometricInterpretation', '?')}) is not read; "
                                "MRI slices hold one grey value per pixel")  # fmt: skip
            arr = ds.pixel_array.astype(np.float32)
            pos = np.array(ds.ImagePositionPatient, float)
            orient = np.array(ds.ImageOrientationPatient, float)
            spacing = [float(v) for v in ds.PixelSpacing]
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{p}: cannot read DICOM slice ({type(exc).__name__}: {exc})") from None
        _check_geometry(p, pos, orient, spacing)
        slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
        del ds.PixelData  # keep the header for a DICOM SEG, not the pixels twice
        slices.append((p, arr * slope + intercept, pos, orient, spacing, getattr(ds, "SeriesInstanceUID", None), ds))
    if not slices:
        named = ", ".join(no_pixels[:3]) + ", ..." * (len(no_pixels) > 3)
        raise DataError(f"{folder}: its {len(no_pixels)} DICOM file(s) hold no pixel data (presentation states, "
                        f"reports: {named}), so no MRI slice")  # fmt: skip
    if len(series := {s[5] for s in slices}) > 1:
        raise DataError(f"{folder}: holds {len(series)} series (SeriesInstanceUID differs): "
                        f"{_series_list(slices)}; put each series in a folder of its own")  # fmt: skip
    orient = slices[0][3]
    if any(not np.allclose(s[3], orient, atol=1e-4) for s in slices):
        raise DataError(f"{folder}: slices differ in orientation")
    if any(s[1].shape != slices[0][1].shape for s in slices):
        raise DataError(f"{folder}: slices differ in size")
    odd = next((s for s in slices if not np.allclose(s[4], slices[0][4], rtol=1e-4)), None)
    if odd is not None:
        raise DataError(f"{folder}: slices differ in pixel spacing ({slices[0][0].name}: {slices[0][4]} mm, "
                        f"{odd[0].name}: {odd[4]} mm)")  # fmt: skip
    photometric = {str(getattr(s[6], "PhotometricInterpretation", "MONOCHROME2")) for s in slices}
    if len(photometric) > 1:
        raise DataError(f"{folder}: slices differ in PhotometricInterpretation ({', '.join(sorted(photometric))})")
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(s[2] @ normal))
    depth = np.array([s[2] @ normal for s in slices])
    assumed = ""
    if len(slices) > 1:
        gaps = np.diff(depth)
        step = float(np.median(gaps))
        if np.any(np.abs(gaps) < 1e-3):
            k = int(np.argmax(np.abs(gaps) < 1e-3))
            raise DataError(
                f"{folder}: {slices[k][0].name} and {slices[k + 1][0].name} lie at the same position "
                "(a duplicated file, or several images per position: echoes, time points, two series)"
            )
        if step <= 0 or np.any(np.abs(gaps - step) > 0.01 * abs(step) + 1e-3):
            worst = int(np.argmax(np.abs(gaps - step)))
            raise DataError(
                f"{folder}: uneven slice spacing ({gaps[worst]:.3g} mm after {slices[worst][0].name}, "
                f"typical {step:.3g} mm): a slice is missing or the series is inconsistent"
            )
        slice_vec = (slices[-1][2] - slices[0][2]) / (len(slices) - 1)
    else:  # one slice: its thickness is the only spacing along the normal the series gives
        step = next((v for v in map(_positive_mm, (getattr(slices[0][6], a, None) for a in
                     ("SpacingBetweenSlices", "SliceThickness"))) if v), None)  # fmt: skip
        assumed = "" if step else "z"  # said by geometry_notes, as for a NIfTI without sizes
        step = step or 1.0
        slice_vec = normal * step
    row_spacing, col_spacing = slices[0][4]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # voxel axis 0: along a row (increasing column)
    lps[:3, 1] = col_dir * row_spacing  # voxel axis 1: down a column (increasing row)
    lps[:3, 2] = slice_vec
    lps[:3, 3] = slices[0][2]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    array = np.stack([s[1].T for s in slices], axis=-1)  # (columns, rows, slices)
    if not np.isfinite(array).all():
        raise DataError(f"{folder}: DICOM pixel data holds NaN or Inf")
    if photometric == {"MONOCHROME1"}:  # the lowest value is shown white: turned so that bright is high
        array = array.max() + array.min() - array
    return Volume(array, affine, (col_spacing, row_spacing, abs(step)), modality="MR", source=str(folder),
                  dicom_sources=[s[6] for s in slices], assumed=assumed)  # fmt: skip


def write_dicom_seg(path: str | Path, mask: np.ndarray, vol: Volume) -> None:
    """A binary DICOM SEG (highdicom) referencing the series' slices; mask in `vol`'s voxel order."""
    try:
        import highdicom as hd
    except ImportError:
        raise DataError("DICOM SEG output needs highdicom: pip install 'tumorseg[medical]'") from None
    from pydicom.sr.codedict import codes

    from . import __version__

    frames = np.stack([mask[:, :, k].T for k in range(mask.shape[2])]).astype(bool)  # (slices, rows, cols)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="tumor (FLAIR abnormality)",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="tumorseg U-Net", version=__version__, family=codes.DCM.ArtificialIntelligence
        ),
    )
    with warnings.catch_warnings():  # the source's PatientName is copied as it is; highdicom's style advice is noise
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = _segmentation(hd, vol, frames, description)
    seg.SeriesDescription = RESEARCH_ONLY  # what a PACS lists for the series
    import io as _io

    buf = _io.BytesIO()
    seg.save_as(buf)
    atomic_write_bytes(path, buf.getvalue())


RESEARCH_ONLY = "tumorseg AI tumor mask: RESEARCH USE ONLY"


def _segmentation(hd, vol: Volume, frames: np.ndarray, description):
    from . import __version__

    return hd.seg.Segmentation(
        source_images=vol.dicom_sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="tumorseg",
        manufacturer_model_name="tumorseg U-Net (research use only)",
        software_versions=__version__,
        device_serial_number="0",
        content_description=f"{RESEARCH_ONLY}; not a medical device",
        omit_empty_frames=False,
    )
