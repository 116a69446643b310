"""Real-format HDF5 files with checkable contents, and seeded byte-level mutations of them.

TF-free (h5py + numpy only): the supervisor writes and mutates files before a trial starts.

Every file holds two datasets of ``n`` rows:

* ``/g/data`` -- the dataset under test, in one of :data:`FORMATS` (layout, filters, byte order,
  compound, strings), inside a group so the file has group metadata (symbol tables: ``TREE``,
  ``HEAP``, ``SNOD`` with ``libver="earliest"``; ``OHDR`` and v2 structures with ``"latest"``);
* ``/id`` -- int64 row ids ``0..n-1``, contiguous.

Row ``i`` of ``/g/data`` is a pure function of ``i`` (:func:`expected_rows`), so a delivered row
can be checked against what was written as well as against h5py's reading of a damaged file.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import numpy as np

DATA = "/g/data"
IDS = "/id"
DATASETS = {"x": DATA, "id": IDS}

# name -> (description, builder of the dataset-creation kwargs from an rng)
FORMATS = ("contiguous", "chunked", "gzip", "lzf", "shuffle_gzip", "fletcher32", "bigendian",
           "bigendian_gzip", "compound", "string_fixed", "string_vlen", "vector_1d")

COMPOUND = np.dtype([("a", "<i4"), ("b", "<f8"), ("c", "S8")])
SIGNATURES = (b"\x89HDF\r\n\x1a\n", b"OHDR", b"OCHK", b"TREE", b"HEAP", b"SNOD", b"GCOL", b"FRHP",
              b"FHDB", b"FHIB", b"FSHD", b"FSSE", b"BTHD", b"BTIN", b"BTLF", b"FAHD", b"FADB",
              b"EAHD", b"EAIB", b"EADB", b"EASB")


def _numeric(n: int, width: int, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    base = np.arange(n, dtype=np.int64)[:, None] * width + np.arange(width, dtype=np.int64)[None, :]
    if dt.kind == "f":
        return (base.astype(np.float64) + 0.25).astype(dt)
    return base.astype(dt)


def _vlen(i: int) -> bytes:
    return (b"row-%d;" % i) * (1 + i % 4)


def expected_rows(fmt: str, n: int) -> np.ndarray:
    """The values written to ``/g/data`` (as h5py reads them back from an intact file)."""
    if fmt in ("contiguous", "chunked", "fletcher32"):
        return _numeric(n, 6, "<f4")
    if fmt == "gzip":
        return _numeric(n, 4, "<f8")
    if fmt == "lzf":
        return _numeric(n, 5, "<u2")
    if fmt == "shuffle_gzip":
        return _numeric(n, 3, "<i8")
    if fmt == "bigendian":
        return _numeric(n, 3, ">f8")
    if fmt == "bigendian_gzip":
        return _numeric(n, 4, ">i4")
    if fmt == "compound":
        out = np.zeros(n, COMPOUND)
        out["a"] = np.arange(n) * 3
        out["b"] = np.arange(n) + 0.5
        out["c"] = [b"c%06d" % i for i in range(n)]
        return out
    if fmt == "string_fixed":
        return np.array([b"row%06d" % i for i in range(n)], dtype="S12")
    if fmt == "string_vlen":
        return np.array([_vlen(i) for i in range(n)], dtype=object)
    if fmt == "vector_1d":
        return np.arange(n, dtype=np.int64) * 7 + 1
    raise ValueError(f"unknown format {fmt!r}")


def write_file(path: str, fmt: str, n: int, rng: np.random.Generator) -> Dict[str, Any]:
    """Write a valid file of ``fmt`` with ``n`` rows; return how it was written (for reports)."""
    import h5py

    libver = str(rng.choice(["earliest", "latest"]))
    data = expected_rows(fmt, n)
    kw: Dict[str, Any] = {}
    chunk_rows = int(rng.choice([8, 16, 37, 64]))
    chunked = fmt not in ("contiguous", "bigendian", "string_fixed", "compound", "vector_1d") or bool(rng.integers(2))
    if chunked:
        kw["chunks"] = (chunk_rows,) + data.shape[1:]
    if fmt in ("gzip", "bigendian_gzip"):
        kw.update(compression="gzip", compression_opts=int(rng.integers(1, 10)))
    elif fmt == "lzf":
        kw.update(compression="lzf")
    elif fmt == "shuffle_gzip":
        kw.update(compression="gzip", shuffle=True)
    elif fmt == "fletcher32":
        kw.update(fletcher32=True)
        if rng.integers(2):
            kw.update(compression="gzip")
    dtype: Any = data.dtype
    if fmt == "string_vlen":
        dtype = h5py.string_dtype(encoding=str(rng.choice(["ascii", "utf-8"])))
    with h5py.File(path, "w", libver=libver) as f:
        f.attrs["note"] = "queuepipe reliability campaign"
        f.create_dataset(DATA, data=data, dtype=dtype, **kw)
        f.create_dataset(IDS, data=np.arange(n, dtype=np.int64))
    return {"format": fmt, "rows": n, "libver": libver, "chunks": kw.get("chunks"),
            "filters": [k for k in ("compression", "shuffle", "fletcher32") if kw.get(k)],
            "bytes": os.path.getsize(path)}


# ---------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------

MUTATIONS = ("bitflip", "truncate", "zero_page", "meta_flip")
PAGE = 4096


def signature_offsets(blob: bytes) -> List[Tuple[int, bytes]]:
    """Offsets of HDF5 structure signatures in a file's bytes (superblock first)."""
    out: List[Tuple[int, bytes]] = []
    for sig in SIGNATURES:
        start = 0
        while True:
            at = blob.find(sig, start)
            if at < 0:
                break
            out.append((at, sig))
            start = at + 1
    return sorted(out)


def mutate(path: str, how: str, rng: np.random.Generator) -> Dict[str, Any]:
    """Damage ``path`` in place by ``how``; return exactly what was changed (offsets, bits)."""
    with open(path, "rb") as fh:
        blob = bytearray(fh.read())
    size = len(blob)
    info: Dict[str, Any] = {"mutation": how, "size_before": size}
    if how == "bitflip":
        flips = []
        for _ in range(int(rng.integers(1, 9))):
            off, bit = int(rng.integers(0, size)), int(rng.integers(0, 8))
            blob[off] ^= 1 << bit
            flips.append((off, bit))
        info["flips"] = flips
    elif how == "meta_flip":
        anchors = signature_offsets(bytes(blob))
        flips = []
        for _ in range(int(rng.integers(1, 5))):
            at, sig = anchors[int(rng.integers(0, len(anchors)))]
            span = 96 if sig.startswith(b"\x89HDF") else 64
            off = min(size - 1, at + int(rng.integers(0, span)))
            bit = int(rng.integers(0, 8))
            blob[off] ^= 1 << bit
            flips.append((off, bit, sig.decode("latin-1").strip("\x89\r\n\x1a")))
        info["flips"] = flips
    elif how == "zero_page":
        pages = sorted({int(rng.integers(0, (size + PAGE - 1) // PAGE)) for _ in range(int(rng.integers(1, 4)))})
        for p in pages:
            blob[p * PAGE:(p + 1) * PAGE] = bytes(len(blob[p * PAGE:(p + 1) * PAGE]))
        info["pages"] = pages
    elif how == "truncate":
        keep = int(rng.integers(1, size))
        del blob[keep:]
        info["keep"] = keep
    else:
        raise ValueError(f"unknown mutation {how!r}")
    with open(path, "wb") as fh:
        fh.write(bytes(blob))
    info["size_after"] = len(blob)
    return info


def prepare_plain(p, workdir: str, stem: str):
    """A kind's ``prepare`` when its trial reads an intact 400-row file of ``p["format"]``
    (``p["source"] == "hdf5"``): ``{"path": ...}``, or ``{}`` for generator sources."""
    if p["source"] != "hdf5":
        return {}
    path = os.path.join(workdir, f"{stem}-{p['format']}.h5")
    write_file(path, p["format"], 400, np.random.default_rng(p["file_seed"]))
    return {"path": path}
