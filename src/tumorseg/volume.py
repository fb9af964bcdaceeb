"""Whole MRI volumes (NIfTI): read, cut into the model's axial slices, put the mask back.

The volume is reoriented to the closest canonical (RAS+) orientation with nibabel, cut
along the third (inferior -> superior) axis, and each axial slice is shown to the model as
the LGG slices were: anterior at the top, the patient's right on the left. The predicted
mask is put back in the input's own voxel order, so it has the input's shape and affine.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.check import FEWER_SEQUENCES, fewer_sequences_note
from .errors import DataError, MissingExtraError, TooLargeError
from .io import VOLUME_SUFFIXES, atomic_write_bytes, atomic_write_text, quiet_logger

MAX_VOXELS = 1024**3 // 2
MAX_VOX_OFFSET = 4 * 2**20  # bytes; a header and its extensions take far less (nibabel reads them all)
MIN_AXIAL_SIDE = 8  # pixels; a narrower axial cut is a few slices of another plane, not an axial slice


def need_medical(path: str | Path, what: str, modules: tuple[str, ...] = ("nibabel",)) -> None:
    """Raise MissingExtraError naming `path` when one of `modules` (of the medical extra) is missing."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in modules):
        raise MissingExtraError(f"{path}: {what} needs the medical extra: pip install 'tumorseg[medical]'")


def is_volume_path(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def volume_stem(path: Path) -> str:
    """The name a volume's outputs take: a file's name less .nii(.gz); a series folder's whole name
    (`1.2.840.113619.2.55.3`, `Series 3.T2 FLAIR`), also when given as `.` or `..`."""
    if path.is_dir():
        whole = os.path.realpath(path) if path.name in ("", "..") else os.path.abspath(path)  # `lnk/..` as read
        return Path(whole).name or "volume"
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass
class Volume:
    """array: (X, Y, Z) or (X, Y, Z, C) in the file's voxel order; affine: voxel -> world (mm)."""

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    modality: str | None = None
    source: str = ""
    header: object = None
    dicom_sources: list | None = None  # the series' datasets in slice order (voxel axis 2)
    assumed: str = ""  # a size the file did not give and 1 mm stands for, as nibabel reads it ("" = none)
    oriented: bool = True  # False: a NIfTI whose qform and sform codes are 0 (left and right unknown)

    @property
    def channels(self) -> int:
        return 1 if self.array.ndim == 3 else self.array.shape[-1]


def read_nifti(path: str | Path, max_voxels: int = MAX_VOXELS, max_slice_pixels: int | None = None) -> Volume:
    """Read a 3D (one sequence) or 4D (X, Y, Z, C) NIfTI, C = 1 or 3 (T1, FLAIR, T1c); one of
    more than `max_voxels` values, or (given `max_slice_pixels`) with a slice of more pixels in any
    plane, is refused from its header, before its voxels are read; so is one whose header puts
    its voxels more than MAX_VOX_OFFSET bytes in (which a small .nii.gz can make gigabytes to inflate)."""
    need_medical(path, "reading NIfTI")
    import nibabel as nib

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a NIfTI file (.nii or .nii.gz)")
    _check_vox_offset(path)  # before nibabel, which reads the extensions up to it
    try:
        with quiet_logger("nibabel.global"):  # "setting 0 dims to 1" names no file: geometry_notes says it instead
            img = nib.load(str(path))
        shape = img.shape
        if 0 in shape:
            raise DataError(f"{path}: volume is empty ({'x'.join(map(str, shape))} voxels)")
        if int(np.prod(shape)) > max_voxels:
            raise TooLargeError(f"{path}: volume of {'x'.join(map(str, shape))} voxels is too large "
                            f"(at most {max_voxels} values)")  # fmt: skip
        plane = max((int(a) * int(b) for i, a in enumerate(shape[:3]) for b in shape[i + 1 : 3]), default=0)
        if max_slice_pixels is not None and plane > max_slice_pixels:
            raise TooLargeError(f"{path}: volume of {'x'.join(map(str, shape))} voxels has slices of {plane} "
                                f"pixels, too large (at most {max_slice_pixels} per slice)")  # fmt: skip
        data = np.asanyarray(img.dataobj)
    except DataError:
        raise
    except Exception as exc:
        said = " ".join(str(exc).replace(" from \n", " ").split())  # nibabel's "... bytes from \n - could ..."
        raise DataError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {said})") from None
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1) or (X, Y, Z, 1, 1)
        data = data[..., 0]
    if data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, C) as some tools write it
        data = data[:, :, :, 0]
    if data.dtype.kind not in "biuf":  # RGB24 / RGBA32 (structured) or complex voxels
        raise DataError(f"{path}: voxels of type {data.dtype} (RGB or complex) are not supported; "
                        "give one grey value per voxel, a sequence per file or channel")  # fmt: skip
    if data.ndim not in (3, 4) or min(data.shape[:3]) < 1:
        raise DataError(f"{path}: expected a 3D volume or a 4D volume of 3 channels, got shape {data.shape}")
    if data.ndim == 4 and data.shape[-1] != 3:
        raise DataError(f"{path}: 4D volume with {data.shape[-1]} channels; expected 3 (T1, FLAIR, T1c) or 1")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise DataError(f"{path}: volume holds NaN or Inf voxels")
    with np.errstate(over="ignore"):  # the overflow is what this looks for, not a warning to print
        huge = data.dtype.kind == "f" and max(float(data.max()), -float(data.min())) > np.finfo(np.float32).max
    if huge:
        raise DataError(f"{path}: voxel values beyond ±3.4e38 (float32's range; a huge scl_slope?)")
    unit = img.header.get_xyzt_units()[0] if hasattr(img.header, "get_xyzt_units") else "unknown"
    if unit in ("meter", "micron"):  # mL and HD95 would be off by 1e9 or 1e-9
        raise DataError(f"{path}: its header gives lengths in {unit}s (xyzt_units), and tumorseg reads voxel sizes "
                        "in mm, as nearly every tool writes them; save it in mm (nibabel: scale the affine's first "
                        "three rows to mm and call header.set_xyzt_units('mm'))")  # fmt: skip
    affine = np.asarray(img.affine, float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12 or not _has_axes(affine):
        raise DataError(f"{path}: its voxel-to-world matrix (sform/qform) is degenerate, so the axial axis "
                        f"cannot be found: {affine[:3].round(4).tolist()}")  # fmt: skip
    # the spacing of the affine the voxels are placed by (sform or qform), not the header's pixdim,
    # which a writer may leave at 1 mm: volumes, areas and HD95 then agree with the geometry
    return Volume(data, affine, affine_spacing(affine), source=str(path), header=img.header,
                  assumed=_unsized_axes(path, img.header), oriented=_states_orientation(img.header))  # fmt: skip


def _states_orientation(header) -> bool:
    """Whether a NIfTI header places its voxels in the patient (qform or sform code above 0);
    with both 0, nibabel's default stands in, and left and right are a guess."""
    try:
        return int(header["qform_code"]) > 0 or int(header["sform_code"]) > 0
    except (KeyError, TypeError, ValueError):  # not a NIfTI header (Analyze): nothing stated either
        return False


def _check_vox_offset(path: Path) -> None:
    """Refuse a NIfTI-1/2 header that puts the voxels more than MAX_VOX_OFFSET bytes in: read from
    the file's first bytes, since nibabel inflates and keeps every extension up to that point
    (a 100 KB .nii.gz could hold 2 GB of them). Other files are left to nibabel."""
    import struct

    try:
        with gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb") as f:
            head = f.read(176)
    except Exception:  # OSError, EOFError, zlib.error (a damaged stream: found by the fuzz test)
        return  # nibabel says what is wrong with it, naming the file
    for order in "<>":
        if len(head) >= 112 and struct.unpack(order + "i", head[:4])[0] == 348:  # NIfTI-1: float32 at 108
            offset = struct.unpack(order + "f", head[108:112])[0]
        elif len(head) >= 176 and struct.unpack(order + "i", head[:4])[0] == 540:  # NIfTI-2: int64 at 168
            offset = struct.unpack(order + "q", head[168:176])[0]
        else:
            continue
        if not offset <= MAX_VOX_OFFSET:  # NaN too
            raise DataError(f"{path}: its header puts the voxels {offset / 2**20:.0f} MiB into the file (vox_offset), "
                            "far past any header and its extensions: a damaged file, or one made to exhaust "
                            "the reader")  # fmt: skip
        return


def _unsized_axes(path: Path, header) -> str:
    """The voxel axes ("x", "z", ...) a NIfTI without sform and qform gives no size along (pixdim 0,
    negative or NaN), which nibabel takes as 1 mm: read from the file, as nibabel mends the header
    it loads."""
    from nibabel.openers import ImageOpener

    try:
        if int(header["sform_code"]) or int(header["qform_code"]):
            return ""  # an affine with a zero column is refused above as degenerate
        with ImageOpener(str(path)) as f:
            sizes = np.asarray(type(header).from_fileobj(f, check=False)["pixdim"][1:4], float)
    except Exception:  # not a NIfTI-1/2 header: no pixdim to read
        return ""
    return ", ".join(axis for axis, z in zip("xyz", sizes) if not (np.isfinite(z) and z > 0))


def _has_axes(affine: np.ndarray) -> bool:
    """Each voxel axis maps to its own world axis (what reorienting to RAS needs): not so for a
    matrix whose one huge term (1e38) swamps the others."""
    from nibabel.orientations import io_orientation

    try:
        with np.errstate(all="ignore"):
            ornt = io_orientation(affine)
    except Exception:  # nibabel's OrientationError, or a LinAlgError from its SVD
        return False
    return bool(np.isfinite(ornt).all() and len(set(ornt[:, 0])) == 3)


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """The voxel size in mm along each voxel axis of a voxel-to-world matrix."""
    return tuple(float(z) for z in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0)))


def in_voxel_order_of(vol: Volume, ref: Volume) -> tuple[Volume, str]:
    """`vol` in `ref`'s voxel order when the two are stored in other axis orders or flips (LPS beside
    RAS, axes swapped), reoriented by its affine, with a note saying so; else as it is, and no note."""
    import nibabel as nib
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    src, dst = io_orientation(vol.affine), io_orientation(ref.affine)
    if np.array_equal(src, dst):
        return vol, ""
    move = ornt_transform(src, dst)
    array = np.ascontiguousarray(apply_orientation(vol.array, move))
    affine = vol.affine @ inv_ornt_aff(move, vol.array.shape[:3])
    said = (f"{vol.source}: stored as {''.join(nib.aff2axcodes(vol.affine))}, {ref.source} as "
            f"{''.join(nib.aff2axcodes(ref.affine))}: reoriented to the latter's voxel order")  # fmt: skip
    # the header and DICOM datasets describe the old voxel order: dropped; the unsized axes are renamed
    axes = [a.strip() for a in vol.assumed.split(",") if a.strip()]
    assumed = ", ".join(sorted("xyz"[int(move["xyz".index(a), 0])] for a in axes))
    return Volume(array, affine, affine_spacing(affine), vol.modality, vol.source, assumed=assumed,
                  oriented=vol.oriented), said  # fmt: skip


def stack_channels(t1: Volume | None, flair: Volume, t1c: Volume | None) -> tuple[Volume, list[str]]:
    """Three single-sequence volumes -> one (X, Y, Z, 3). A missing one is filled with FLAIR,
    as the LGG dataset does; one stored in another voxel order than the FLAIR (LPS beside RAS) is
    reoriented to it; the returned notes say which."""
    notes = []
    parts = []
    for name, vol in (("FLAIR", flair), ("T1", t1), ("T1c", t1c)):  # FLAIR first: errors name its option
        if vol is None:
            notes.append(f"{name} missing: filled with FLAIR, as the training data does")
            vol = flair
        if vol.array.ndim != 3:
            raise DataError(f"{vol.source}: --{name.lower()} needs a single-sequence 3D volume, "
                            f"got shape {vol.array.shape}")  # fmt: skip
        vol, said = in_voxel_order_of(vol, flair)
        if said:
            notes.append(f"{name}: {said}")
        if vol.array.shape != flair.array.shape:
            raise DataError(f"{vol.source}: shape {vol.array.shape} differs from the FLAIR volume "
                            f"{flair.source} {flair.array.shape}")  # fmt: skip
        if not np.allclose(vol.affine, flair.affine, atol=1e-3):
            raise DataError(f"{vol.source}: affine (position or orientation) differs from the FLAIR volume "
                            f"{flair.source}; register or resample it to the FLAIR first")  # fmt: skip
        parts.append(vol.array)
    parts = [parts[1], parts[0], parts[2]]  # T1, FLAIR, T1c
    if any(p.dtype != np.uint8 for p in parts):  # all uint8: used as they are, like a uint8 4D file
        parts = [p.astype(np.float32) for p in parts]
    # from DICOM series, a SEG references the FLAIR series
    stacked = Volume(np.stack(parts, -1), flair.affine, flair.spacing, source=flair.source, header=flair.header,
                     dicom_sources=flair.dicom_sources, assumed=flair.assumed, oriented=flair.oriented)  # fmt: skip
    return stacked, notes


def to_uint8(channel: np.ndarray) -> np.ndarray:
    """One channel of a volume -> uint8 0..255, the range of the training slices.

    uint8 volumes are kept as they are. Others are clipped at their 0.5 and 99.5 percentiles
    inside the head (voxels above the channel's minimum) and scaled to 0..255, the same for
    every slice of the volume.
    """
    if channel.dtype == np.uint8:
        return channel
    x = channel.astype(np.float32)
    head = x[x > x.min()]
    if head.size == 0:
        return np.zeros(x.shape, np.uint8)
    lo, hi = np.percentile(head, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1
    return np.round(np.clip((x - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _canonical(vol: Volume):
    from nibabel.orientations import apply_orientation, io_orientation

    ornt = io_orientation(vol.affine)
    return apply_orientation(vol.array, ornt), ornt


def volume_slices(vol: Volume, channels: str = "all") -> tuple[np.ndarray, list[str]]:
    """-> uint8 (Z, C, H, W) axial slices in canonical order (inferior first), and notes."""
    data, _ = _canonical(vol)
    x, y, z = data.shape[:3]
    if min(x, y) < MIN_AXIAL_SIDE:
        said = f"{vol.source or 'the volume'}: its axial slices would be {x} x {y} pixels ({z} of them)"
        if max(x, y) < MIN_AXIAL_SIDE or z < MIN_AXIAL_SIDE:  # a tiny crop, not a slab of another plane
            raise DataError(f"{said}, too small to segment (at least {MIN_AXIAL_SIDE} x {MIN_AXIAL_SIDE})")
        one = min(x, y) == 1
        raise DataError(
            f"{said}: it holds {min(x, y)} slice{'s' * (not one)} in another plane (coronal or sagittal), and "
            "tumorseg segments axial slices, as it was trained; give the axial series"
            + (", or save the slice as a 2D image (PNG or TIFF) to segment it as it is" if one else "")
        )
    notes = []
    if (labels := _label_values(data)) is not None and " and " not in labels:  # callers name the file
        notes.append(f"the volume holds only the value {labels}: it is blank, so its result means nothing")
    elif labels is not None:
        notes.append(f"the volume holds only the values {labels}: it looks like a mask or label volume, not an "
                     "MRI, so its result means nothing")  # fmt: skip
    if data.ndim == 3:
        data = data[..., None]
        if channels == "all":
            notes.append(
                "one sequence given: taken as FLAIR and repeated into T1 and T1c, as the training data does "
                f"for a missing sequence; {FEWER_SEQUENCES}"
            )
    chans = [to_uint8(data[..., c]) for c in range(data.shape[-1])]
    if channels == "flair":
        chans = [chans[1] if len(chans) == 3 else chans[0]]
    elif len(chans) == 1:
        chans = chans * 3
    arr = np.stack(chans, 0)  # (C, X, Y, Z)
    # axial slice k, shown like the LGG slices: row 0 anterior, column 0 the patient's right
    slices = np.ascontiguousarray(arr[:, ::-1, ::-1, :].transpose(3, 0, 2, 1))  # (Z, C, Y, X)
    if vol.array.ndim == 4 and (note := fewer_sequences_note(slices)):  # T1s that copy FLAIR (one sequence: above)
        notes.append(note)
    notes += geometry_notes(vol)
    return slices, notes


def _label_values(data: np.ndarray, most: int = 8) -> str | None:
    """'0 and 1', '0, 1, 2 and 4': the values of a volume of at most `most` whole numbers (a mask or
    label map: an MRI has hundreds of grey values); None for anything else. A sample decides first."""
    values = np.unique(data[::4, ::4, ::4])
    if len(values) > most:
        return None
    # what the sample missed (a rare label, few voxels); "sort", since "table" indexes the volume through int64
    rest = data[~np.isin(data, values, kind="sort")]
    values = np.union1d(values, np.unique(rest[: 1 << 20]))
    if (
        len(values) > most
        or not np.array_equal(values, np.round(values))
        or not np.isin(rest, values, kind="sort").all()
    ):
        return None
    text = [f"{v:g}" for v in values.tolist()]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def geometry_notes(vol: Volume, anisotropy: float = 2.0, oblique_deg: float = 25.0) -> list[str]:
    """Notes on a volume whose axial slices are unlike the training slices (axial, about 1 mm square
    pixels): one acquired in another plane, whose axial cut has long thin pixels, or one tilted far
    from every world axis, which is cut along the nearest."""
    notes = []
    if vol.assumed:
        why = (
            "one slice, with no SliceThickness or SpacingBetweenSlices"
            if vol.dicom_sources
            else "pixdim 0 and no sform or qform"
        )
        notes.append(
            f"the file gives no voxel size along {vol.assumed} ({why}): 1 mm is assumed, "
            "so the tumor volume in mL and the areas in mm2 are not to be trusted"
        )
    if not vol.oriented:
        notes.append(
            "the file states no orientation (no qform or sform code above 0): left and right, front and back, "
            "head and feet are not known, so slices are counted in the file's order and the images carry no "
            "R/L/A/P letters"
        )
    r, a, _ = _canonical_spacing(vol)
    if max(r, a) > anisotropy * min(r, a):
        notes.append(
            f"the axial slices have {r:.2g} x {a:.2g} mm pixels: the volume was acquired in another plane, and "
            "the model was trained on axial slices with square pixels, so expect a lower score"
        )
    axes = vol.affine[:3, :3] / np.linalg.norm(vol.affine[:3, :3], axis=0)
    tilt = float(np.degrees(np.arccos(np.clip(np.abs(axes).max(axis=0).min(), 0, 1))))
    if tilt > oblique_deg:
        notes.append(
            f"the volume is tilted {tilt:.0f} degrees from the nearest world axis: it is cut along that axis, "
            "so its slices are oblique to the axial plane"
        )
    return notes


def mask_to_volume(mask: np.ndarray, vol: Volume) -> np.ndarray:
    """(Z, H, W) slice masks from `volume_slices` -> uint8 {0, 1} in the input's voxel order."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    canon = np.ascontiguousarray(np.asarray(mask, np.uint8).transpose(2, 1, 0)[::-1, ::-1, :])  # (X, Y, Z)
    _, ornt = _canonical(vol)
    back = ornt_transform(axcodes2ornt(("R", "A", "S")), ornt)
    out = apply_orientation(canon, back)
    assert out.shape == vol.array.shape[:3], (out.shape, vol.array.shape)
    return np.ascontiguousarray(out.astype(np.uint8))


def write_nifti(path: str | Path, mask: np.ndarray, vol: Volume) -> None:
    """Write a uint8 mask with the input's affine (and its header's geometry), atomically."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(mask, np.uint8), vol.affine)
    if vol.header is not None and hasattr(vol.header, "get_qform"):
        # each form as the input has it: one with code 0 is unset there (its matrix may be all zeros)
        qcode, scode = int(vol.header["qform_code"]), int(vol.header["sform_code"])
        img.set_qform(vol.header.get_qform() if qcode else None, qcode)
        img.set_sform(vol.header.get_sform() if scode else None, scode)
    img.set_data_dtype(np.uint8)
    data = img.to_bytes()
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)


def mask_summary(mask: np.ndarray, vol: Volume) -> dict:
    """Tumor volume in mL, the axial slices with tumor and the largest cross-section.

    mask: (Z, H, W) canonical axial slices (index 0 is the most inferior slice).
    """
    det = abs(float(np.linalg.det(np.asarray(vol.affine, float)[:3, :3])))
    voxel_mm3 = det if np.isfinite(det) and det > 0 else float(np.prod(vol.spacing))  # a sheared grid too
    canon_spacing = _canonical_spacing(vol)
    areas = mask.reshape(len(mask), -1).sum(1)
    with_tumor = [int(i) for i in np.flatnonzero(areas)]
    k = int(np.argmax(areas)) if with_tumor else None
    return {
        "tumor_voxels": int(areas.sum()),
        "tumor_volume_ml": float(f"{areas.sum() * voxel_mm3 / 1000:.6g}"),  # not float32's noise (5.57684970452786)
        "voxel_spacing_mm": list(vol.spacing),
        "axial_slices": len(mask),
        "slices_with_tumor": with_tumor,
        "largest_cross_section": None
        if k is None
        else {
            "slice": k,
            "pixels": int(areas[k]),
            "area_mm2": float(f"{areas[k] * canon_spacing[0] * canon_spacing[1]:.6g}"),
        },
        "slice_order": "canonical RAS+ axial order, index 0 the most inferior slice"
        if vol.oriented
        else "the file's own slice order (it states no orientation, so which end is inferior is not known)",
    }


def millilitres(ml: float) -> str:
    """A volume for people: "2.35 mL", and a tumor of a few voxels "under 0.01 mL", never "0.00 mL"."""
    return "0 mL" if ml == 0 else "under 0.01 mL" if ml < 0.01 else f"{ml:.2f} mL"


def _canonical_spacing(vol: Volume) -> tuple[float, float, float]:
    from nibabel.orientations import io_orientation

    ornt = io_orientation(vol.affine)  # the axes only: no copy of the array
    sp = [0.0, 0.0, 0.0]
    for i, (axis, _) in enumerate(ornt):
        sp[int(axis)] = vol.spacing[i]
    return tuple(sp)


def write_summary(path: str | Path, summary: dict) -> None:
    atomic_write_text(path, json.dumps(summary, indent=2))


def mask_slices(mask: np.ndarray, vol: Volume) -> np.ndarray:
    """A mask volume in `vol`'s voxel order -> bool (Z, H, W) axial slices, as `volume_slices` cuts."""
    from nibabel.orientations import apply_orientation

    _, ornt = _canonical(vol)
    canon = apply_orientation(np.asarray(mask), ornt)
    return np.ascontiguousarray(canon[::-1, ::-1, :].transpose(2, 1, 0) > 0)


def slice_spacing(vol: Volume) -> tuple[float, float, float]:
    """Spacing (mm) of the (Z, H, W) axes of `volume_slices`' output."""
    sx, sy, sz = _canonical_spacing(vol)
    return (sz, sy, sx)


def read_volume(path: str | Path) -> Volume:
    """A NIfTI file or a DICOM series folder."""
    path = Path(path)
    if path.is_dir():
        from .dicom import read_dicom_series  # dicom.py imports this module

        return read_dicom_series(path)
    return read_nifti(path)
