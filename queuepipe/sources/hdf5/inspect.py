"""Build-time checks of the files and datasets, and what the batch will look like.

Everything a worker could trip over later is checked here, in the calling thread,
before any worker starts: files that are missing, empty, truncated or not HDF5;
datasets that are missing, dangling links, groups, scalars or empty; datasets of one
file with different row counts; files that disagree on a dataset's row shape or
dtype; dtypes TensorFlow (or h5py) cannot take; filters (compression plugins) this
process cannot decode; data stored in other files outside the file's folder (unless
``allow_external``) or in external raw data files shorter than it.  Each error names the
file, the dataset and the reason -- so does any error h5py raises on a damaged file.

The result, a :class:`Layout`, is small and picklable: it says which datasets to
read and how, and which output columns (tensors) they feed.

Naming of compound (struct) datasets: one tensor per leaf field.  In a dict of
datasets, field ``f`` of dataset key ``X`` is key ``"X.f"`` (nested fields
``"X.f.g"``); a single compound dataset gives a dict keyed ``"f"``, ``"f.g"``.  In a
tuple of datasets a compound dataset is refused (use a dict).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple, Type

import h5py
import numpy as np
from h5py import h5d, h5f, h5t, h5z

from ...spec import pack_structure
from ..files import resolve_paths
from .chunk_decode import DecodedChunks
from .chunk_table import external_raw_files, shorter_than_data
from .h5py_rows import H5pyRows
from .raw_rows import RawRows
from ...errors import (HDF5FileNotFoundError, HDF5FilterError, HDF5InputError, HDF5TypeError,
                      QueuepipeError)

if TYPE_CHECKING:
    from .reader import RowReader

ROW_ID = "row_id"

# Filters HDF5 or h5py always carry (szip only where HDF5 was built with it: checked anyway).
BUILTIN_FILTERS = {1: "deflate (gzip)", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                   6: "scaleoffset", 32000: "lzf"}
# Filters the hdf5plugin package registers when imported.
HDF5PLUGIN_FILTERS = {307: "bzip2", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32013: "zfp",
                      32015: "zstd", 32017: "sz", 32018: "fcidecomp", 32024: "sz3", 32026: "blosc2"}

SUPPORTED_NUMERIC = {np.dtype(t) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                            "uint32", "uint64", "float16", "float32", "float64",
                                            "complex64", "complex128")}
STRING_ROW_BYTES = 64  # a guess at a string's size, for read planning only
# The ways a worker can read a dataset's rows, in the order it tries them (see
# reader.RowReader); each says for itself whether it applies.  h5py reads anything.
READERS: Tuple[Type["RowReader"], ...] = (RawRows, DecodedChunks, H5pyRows)


@dataclass
class DatasetRead:
    """How to read one dataset: a path present in every file, and the columns it feeds.

    kind: "numeric" (read straight into preallocated buffers, converted to native
    byte order by HDF5), "string" or "compound" (read as numpy arrays, then copied).
    mem_dtype: numeric only -- the native dtype HDF5 converts to (subarray included).
    """

    path: str
    kind: str
    mem_dtype: Optional[np.dtype]
    row_bytes: int
    columns: List[int] = field(default_factory=list)


@dataclass
class Column:
    """One output tensor before ``map_fn``: a dataset, a compound field of one, or row ids."""

    name: str
    dataset: Optional[int]          # index into Layout.datasets; None for row ids
    field: Tuple[str, ...]          # compound field path, () for the whole dataset
    dtype: np.dtype                 # native; object for strings
    shape: Tuple[int, ...]          # per-row shape


@dataclass
class FileInfo:
    """One input file: its rows and per-dataset read settings (lists: one entry per dataset)."""

    path: str
    n_rows: int
    cache_bytes: List[int]                    # chunk-cache bytes (0: read around the cache)
    filtered_chunk_rows: List[Optional[int]]  # chunk rows of a compressed (filtered) dataset
    readers: List[Tuple[Type["RowReader"], ...]]  # the READERS that apply, in order (h5py last)
    chunk_rows: Optional[int]                 # chunk rows of the widest chunked dataset, if any


@dataclass
class Layout:
    """Files, datasets to read, and the columns of the batch (before ``map_fn``)."""

    kind: str                       # "single", "tuple" or "dict"
    keys: Optional[List[str]]       # dict keys (kind == "dict")
    files: List[FileInfo]
    datasets: List[DatasetRead]
    columns: List[Column]
    plugin_filters: Dict[int, str]  # non-built-in filters the data needs

    @property
    def row_id_column(self) -> Optional[int]:
        for i, c in enumerate(self.columns):
            if c.dataset is None:
                return i
        return None

    def pack(self, leaves: List[Any]) -> Any:
        """Leaves in column order -> the batch structure (one value, tuple or dict)."""
        return pack_structure(self.kind, self.keys, leaves)


def needs_inflater(layout: Layout) -> bool:
    """Whether a worker will decode some dataset with queuepipe's own decoder, so that a bad
    ``QUEUEPIPE_INFLATE`` can be refused when the pipeline is built."""
    return any(DecodedChunks in readers for f in layout.files for readers in f.readers)


def reads_plain_rows(layout: Layout, file_index: int, dataset_index: int) -> bool:
    """Whether a worker reads the dataset's rows in that file as plain bytes at their
    offsets (:class:`.raw_rows.RawRows`), so that small scattered reads are cheap."""
    return layout.files[file_index].readers[dataset_index][0] is RawRows


def read_path_names(layout: Layout, file_index: int) -> List[str]:
    """How a worker will read each dataset of a file, in words (its first reader's name)."""
    return [readers[0].describe() for readers in layout.files[file_index].readers]


# -- files -----------------------------------------------------------------------------------------

def resolve_files(files: Any) -> List[str]:
    """A path, a glob or a list of them -> existing absolute paths, in the given order.

    A glob's matches are sorted by name; a pattern that matches nothing is an error."""
    return resolve_paths(files, "HDF5", type_error=HDF5TypeError, input_error=HDF5InputError,
                         not_found=HDF5FileNotFoundError)


def open_checked(path: str):
    """Open ``path`` read-only, with a clear error for empty, non-HDF5 or damaged files."""
    size = os.path.getsize(path)
    if size == 0:
        raise HDF5InputError(f"{path}: empty file (0 bytes), not an HDF5 file")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except Exception as exc:
        raise HDF5InputError(f"{path}: cannot be read: {exc}") from None
    if not is_hdf5:
        raise HDF5InputError(f"{path}: not an HDF5 file (no HDF5 signature in its {size} bytes)")
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise HDF5InputError(f"{path}: cannot be opened as HDF5 (truncated or damaged file?): "
                             f"{exc}") from None
    try:  # HDF5 checks this when it opens a file; the file may have shrunk since
        size, end = os.path.getsize(path), int(f.id.get_filesize())
    except Exception as exc:
        f.close()
        raise HDF5InputError(f"{path}: cannot be read: {exc}") from None
    if size < end:
        f.close()
        raise HDF5InputError(f"{path}: {shorter_than_data(size, end)}")
    return f


# -- datasets ---------------------------------------------------------------------------------------

def normalise_datasets(datasets: Any) -> Tuple[str, Optional[List[str]], List[str]]:
    """``datasets`` -> (kind, dict keys or None, dataset paths)."""
    if isinstance(datasets, str):
        return "single", None, [datasets]
    if isinstance(datasets, dict):
        if not datasets:
            raise HDF5InputError("datasets is an empty dict: name at least one dataset")
        for k, v in datasets.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise HDF5TypeError(f"datasets: a dict maps names (str) to dataset paths (str), "
                                    f"got {k!r}: {v!r}")
        return "dict", list(datasets), list(datasets.values())
    if isinstance(datasets, (list, tuple)):
        if not datasets:
            raise HDF5InputError("datasets is empty: name at least one dataset")
        for v in datasets:
            if not isinstance(v, str):
                raise HDF5TypeError(f"datasets: expected dataset paths (str), got {v!r}")
        return "tuple", None, list(datasets)
    raise HDF5TypeError("datasets must be a dataset path, a list/tuple of paths or a dict "
                        f"{{name: path}}, got {type(datasets).__name__}")


def get_dataset(f, path: str, file: str):
    """``f[path]`` as a Dataset, or an error saying which link or name is missing and why."""
    try:
        obj = f[path]
    except Exception as exc:  # h5py raises KeyError, OSError, ValueError, RuntimeError ...
        raise _missing(f, path, file, exc) from None
    if not isinstance(obj, h5py.Dataset):
        raise HDF5InputError(f"{file}: '{path}' is a {type(obj).__name__.lower()}, not a dataset")
    return obj


def _missing(f, path: str, file: str, exc: BaseException) -> Exception:
    """Explain why ``path`` cannot be opened: walk it link by link.  A file whose link
    tables are damaged fails on the way: that error, with HDF5's reason, is the answer."""
    try:
        return _walk_links(f, path, file, exc)
    except Exception as inner:
        return HDF5InputError(f"{file}: dataset '{path}' cannot be opened (damaged file?): "
                              f"{type(inner).__name__}: {inner}")


def _walk_links(f, path: str, file: str, exc: BaseException) -> Exception:
    parts = [p for p in path.split("/") if p]
    current = "/"
    for part in parts:
        try:
            group = f[current]
        except Exception:
            break
        if not isinstance(group, h5py.Group):
            return HDF5InputError(f"{file}: dataset '{path}' not found: '{current}' is not a group")
        link = group.get(part, getlink=True)
        here = current.rstrip("/") + "/" + part
        if link is None:
            names = sorted(group.keys())
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            return HDF5InputError(f"{file}: dataset '{path}' not found: group '{current}' has no member "
                                  f"'{part}' (it has: {shown or 'nothing'})")
        if isinstance(link, h5py.SoftLink):
            target = link.path if link.path.startswith("/") else current.rstrip("/") + "/" + link.path
            if f.get(target) is None:
                return HDF5InputError(f"{file}: dataset '{path}': soft link '{here}' -> '{link.path}' is "
                                      f"dangling (no object at '{link.path}')")
        elif isinstance(link, h5py.ExternalLink):
            target = link.filename
            if not os.path.isabs(target):
                target = os.path.join(os.path.dirname(file), target)
            if not os.path.exists(target):
                return HDF5FileNotFoundError(f"{file}: dataset '{path}': external link '{here}' -> "
                                             f"'{link.filename}:{link.path}' is dangling: file {target} "
                                             f"does not exist")
            try:
                f[here]
            except Exception as inner:
                return HDF5InputError(f"{file}: dataset '{path}': external link '{here}' -> "
                                      f"'{link.filename}:{link.path}' cannot be followed: {inner}")
        current = here
    return HDF5InputError(f"{file}: dataset '{path}' cannot be opened: {exc}")


def _leaf_columns(dtype: np.dtype, shape: Tuple[int, ...], prefix: Tuple[str, ...], where: str
                  ) -> List[Tuple[Tuple[str, ...], np.dtype, Tuple[int, ...]]]:
    """(field path, native dtype, per-row shape) of each tensor a dtype becomes."""
    label = f"{where}{' field ' + '.'.join(prefix) if prefix else ''}"
    if h5py.check_string_dtype(dtype) is not None:
        return [(prefix, np.dtype(object), shape)]
    if h5py.check_vlen_dtype(dtype) is not None:
        raise HDF5TypeError(f"{label}: variable-length (ragged) arrays of {h5py.check_vlen_dtype(dtype)} "
                            f"are not supported (only variable-length strings are)")
    if h5py.check_ref_dtype(dtype) is not None:
        raise HDF5TypeError(f"{label}: object/region references are not supported")
    if dtype.subdtype is not None:
        base, sub = dtype.subdtype
        return _leaf_columns(base, shape + tuple(sub), prefix, where)
    if dtype.names is not None:
        leaves = []
        for name in dtype.names:
            leaves.extend(_leaf_columns(dtype.fields[name][0], shape, prefix + (name,), where))
        return leaves
    if dtype.kind == "S":
        return [(prefix, np.dtype(object), shape)]
    native = dtype.newbyteorder("=")
    if native not in SUPPORTED_NUMERIC:
        what = "opaque data" if dtype.kind == "V" else f"dtype {dtype}"
        raise HDF5TypeError(f"{label}: {what} has no TensorFlow equivalent (supported: bool, "
                            f"(u)int8-64, float16/32/64, complex64/128, strings, compounds of these)")
    return [(prefix, native, shape)]


def dataset_dtype(dset, where: str) -> np.dtype:
    """``dset.dtype``, or an :class:`HDF5TypeError` naming the field and the HDF5 type numpy
    (so TensorFlow) has no equivalent for: a date/time (``H5T_TIME``) member, a 128-bit float,
    ... -- h5py alone raises a bare TypeError/ValueError naming neither file nor dataset."""
    try:
        return dset.dtype
    except Exception as exc:
        cause = f"{type(exc).__name__}: {exc}"
    try:
        field, what = _unconvertible(dset.id.get_type(), ())
    except Exception:
        field, what = (), "its HDF5 type"
    label = f"{where}{' field ' + '.'.join(field) if field else ''}"
    raise HDF5TypeError(f"{label}: {what} has no numpy or TensorFlow equivalent (h5py: {cause}); "
                        f"supported: bool, (u)int8-64, float16/32/64, complex64/128, strings, compounds "
                        f"of these") from None


_TYPE_CLASSES = {h5t.TIME: "date/time data (HDF5 class H5T_TIME)", h5t.BITFIELD: "a bitfield",
                 h5t.OPAQUE: "opaque data", h5t.REFERENCE: "a reference", h5t.VLEN: "variable-length data",
                 h5t.ENUM: "an enum", h5t.INTEGER: "an integer", h5t.STRING: "a string",
                 h5t.COMPOUND: "a compound"}


def _unconvertible(tid, field: Tuple[str, ...]) -> Tuple[Tuple[str, ...], str]:
    """(field path, words) of the first part of HDF5 type ``tid`` h5py cannot convert."""
    cls = tid.get_class()
    if cls == h5t.COMPOUND:
        for i in range(tid.get_nmembers()):
            member = tid.get_member_type(i)
            try:
                member.dtype
            except Exception:
                name = tid.get_member_name(i)
                return _unconvertible(member, field + (name.decode("utf-8", "replace")
                                                       if isinstance(name, bytes) else str(name),))
    if cls in (h5t.ARRAY, h5t.VLEN, h5t.ENUM):  # the base type is the problem
        return _unconvertible(tid.get_super(), field)
    if cls == h5t.FLOAT:
        _spos, _epos, esize, _mpos, msize = tid.get_fields()
        return field, f"a {tid.get_size() * 8}-bit float ({esize}-bit exponent, {msize}-bit mantissa)"
    return field, _TYPE_CLASSES.get(cls, f"HDF5 type class {cls}")


def _dataset_read(dset, path: str, file: str, key: Optional[str], kind: str
                  ) -> Tuple[DatasetRead, List[Column]]:
    """How to read a dataset, and its output columns (named after ``key``)."""
    where = f"{file}: dataset '{path}'"
    try:
        shape = dset.shape
    except Exception as exc:
        raise HDF5InputError(f"{where}: its dataspace cannot be read (damaged file?): "
                             f"{type(exc).__name__}: {exc}") from None
    if shape is None:
        raise HDF5InputError(f"{where} has no dataspace (an empty/null dataset): nothing to read")
    if len(shape) == 0:
        raise HDF5InputError(f"{where} is a scalar: a dataset needs a leading row dimension")
    if shape[0] == 0:
        raise HDF5InputError(f"{where} has 0 rows")
    dtype = dataset_dtype(dset, where)
    space = tuple(int(d) for d in shape[1:])
    leaves = _leaf_columns(dtype, space, (), where)
    if dtype.names is not None:
        if kind == "tuple":
            raise HDF5TypeError(f"{where} has a compound dtype ({len(leaves)} fields): pass datasets as a "
                                f"dict to get one tensor per field, named '<key>.<field>'")
        read_kind, mem = "compound", None
        row_bytes = sum(STRING_ROW_BYTES * int(np.prod(s)) if d == object else d.itemsize * int(np.prod(s))
                        for _, d, s in leaves)
    elif leaves[0][1] == np.dtype(object):
        read_kind, mem = "string", None
        row_bytes = STRING_ROW_BYTES * int(np.prod(leaves[0][2]))
    else:
        read_kind = "numeric"
        base = leaves[0][1]
        mem = np.dtype((base, dtype.subdtype[1])) if dtype.subdtype is not None else base
        row_bytes = base.itemsize * int(np.prod(leaves[0][2]))
    columns = []
    for fpath, d, s in leaves:
        if fpath:
            name = ".".join(fpath) if key is None else f"{key}.{'.'.join(fpath)}"
        else:
            name = path if key is None else key
        columns.append(Column(name=name, dataset=None, field=fpath, dtype=d, shape=s))
    return DatasetRead(path=path, kind=read_kind, mem_dtype=mem, row_bytes=row_bytes), columns


def filters_of(dset) -> List[Tuple[int, str, int]]:
    """(filter id, name, flags) of a dataset's filter pipeline, in order."""
    dcpl = dset.id.get_create_plist()
    out = []
    for i in range(dcpl.get_nfilters()):
        code, flags, _values, name = dcpl.get_filter(i)
        out.append((int(code), name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name),
                    int(flags)))
    return out


def filter_available(code: int) -> bool:
    """Whether this process can decode HDF5 filter ``code`` (tries loading plugins)."""
    try:
        return bool(h5z.filter_avail(code))
    except Exception:
        return False


def missing_filter_message(file: str, path: str, code: int, name: str) -> str:
    """The error text for a filter that cannot be decoded, with the way to get it."""
    known = HDF5PLUGIN_FILTERS.get(code)
    label = f"{code} ('{known or BUILTIN_FILTERS.get(code) or name or 'unknown'}')"
    if known:
        hint = ("It is provided by the hdf5plugin package: `pip install hdf5plugin`, then "
                "`import hdf5plugin` before building the pipeline.")
    else:
        hint = ("Install a plugin that provides it (the hdf5plugin package provides many: "
                "`pip install hdf5plugin`, then `import hdf5plugin`), or point HDF5_PLUGIN_PATH at one.")
    return (f"{file}: dataset '{path}' is compressed with HDF5 filter {label}, which is not available "
            f"in this process, so it cannot be read. {hint}")


def _file_settings(dset, read: DatasetRead, file: str, path: str, plugin: Dict[int, str]
                   ) -> Tuple[int, Optional[int], Optional[int], Tuple[Type["RowReader"], ...]]:
    """(chunk-cache bytes, compressed chunk rows, chunk rows, readers) of a dataset in a file.

    readers: those of :data:`READERS` that say they can read the dataset, in order.
    """
    filters = filters_of(dset)
    for code, name, _flags in filters:
        # even an "optional" filter (h5py marks every custom filter so) was applied to the
        # chunks it could compress: reading them needs it
        if not filter_available(code):
            raise HDF5FilterError(missing_filter_message(file, path, code, name))
        if code not in BUILTIN_FILTERS:
            plugin[code] = name or HDF5PLUGIN_FILTERS.get(code, "unknown")
    readers = tuple(r for r in READERS if r.can_read(dset.id, read.mem_dtype))
    chunks = dset.chunks
    if chunks is None:
        return 0, None, None, readers
    if not filters and tuple(chunks[1:]) == tuple(dset.shape[1:]):
        # a row range of such a chunk is one contiguous piece of the file: read it straight
        # into our buffer around the cache (one copy, not two)
        return 0, None, int(chunks[0]), readers
    # cache two bands of chunks (all chunks side by side for one chunk of rows), so reads
    # that share a chunk -- or cut a band into column pieces -- decode/fetch it once
    band = int(np.prod([-(-n // c) for n, c in zip(dset.shape[1:], chunks[1:])], dtype=np.int64))
    chunk_bytes = int(np.prod(chunks, dtype=np.int64)) * max(1, dset.dtype.itemsize)
    cache = int(min(max(1 << 20, 2 * band * chunk_bytes), 256 << 20))
    return cache, (int(chunks[0]) if filters else None), int(chunks[0]), readers


@contextmanager
def _damage_named(file: str, path: Optional[str] = None) -> Iterator[None]:
    """Turn any error h5py raises while ``file`` (dataset ``path``) is inspected into an
    :class:`HDF5InputError` naming them: a damaged file fails in many places, each with a
    bare RuntimeError/OSError/... of HDF5's that names neither."""
    try:
        yield
    except QueuepipeError:
        raise
    except Exception as exc:
        what = f"dataset '{path}'" if path is not None else "file"
        raise HDF5InputError(f"{file}: {what} cannot be inspected (damaged file?): "
                             f"{type(exc).__name__}: {exc}") from None


# -- where the data is ------------------------------------------------------------------------------

def data_outside(dset, file: str, depth: int = 0) -> List[Tuple[str, str]]:
    """(what, path) of each file other than ``file`` that dataset ``dset``'s values are read
    from: the target of an external link on its path, its external raw data files, its
    virtual dataset's source files (and, a few levels deep, what those sources read)."""
    out: List[Tuple[str, str]] = []
    holder = os.path.normpath(os.fsdecode(h5f.get_name(dset.id)))  # the file the dataset is in
    if not _same_file(holder, file):
        out.append(("the target of an external link", holder))
    for name, _needed in external_raw_files(dset.id, holder):
        out.append(("an external raw data file", os.path.normpath(name)))
    dcpl = dset.id.get_create_plist()
    if dcpl.get_layout() != h5d.VIRTUAL:
        return out
    for i in range(dcpl.get_virtual_count()):
        name = os.fsdecode(dcpl.get_virtual_filename(i))
        source = holder if name == "." else os.path.normpath(virtual_source_path(name, holder))
        if not _same_file(source, holder):
            out.append(("a virtual dataset source file", source))
        if depth >= 4 or not os.path.exists(source):
            continue
        inner_path = os.fsdecode(dcpl.get_virtual_dsetname(i))
        try:  # a source may itself read other files
            if _same_file(source, holder):
                out.extend(data_outside(dset.file[inner_path], source, depth + 1))
            else:
                with h5py.File(source, "r") as sf:
                    out.extend(data_outside(sf[inner_path], source, depth + 1))
        except Exception:
            pass  # an unreadable source: HDF5 gives the fill value, no other file's bytes
    return out


def virtual_source_path(name: str, vds_file: str) -> str:
    """The file HDF5 opens for a virtual dataset's source file ``name``: an absolute name as
    it is if it exists, else (the name's last part) under ``$HDF5_VDS_PREFIX``, the virtual
    dataset's folder, the current directory -- the first that exists; else the first tried."""
    tried = []
    base = name
    if os.path.isabs(name):
        tried.append(name)
        base = os.path.basename(name)
    folder = os.path.dirname(os.path.abspath(vds_file))
    for prefix in (os.environ.get("HDF5_VDS_PREFIX") or "").split(os.pathsep):
        if prefix:
            tried.append(os.path.join(prefix.replace("${ORIGIN}", folder), base))
    tried += [os.path.join(folder, base), os.path.abspath(base)]
    return next((t for t in tried if os.path.exists(t)), tried[0])


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, file: str) -> bool:
    """Whether ``path`` resolves (symlinks followed) into ``file``'s folder or a subfolder."""
    real = os.path.realpath(path)
    folders = {os.path.realpath(os.path.dirname(os.path.abspath(file))),
               os.path.dirname(os.path.realpath(file))}
    return any(os.path.commonpath([real, d]) == d for d in folders)


def check_data_location(dset, path: str, file: str, allow_external: bool) -> None:
    """Refuse a dataset whose values would come from a file outside ``file``'s folder (unless
    ``allow_external``), and one whose external raw data files are missing or shorter than
    its data (HDF5 would read zeros there).

    An HDF5 file names its external raw data files, virtual dataset sources and external
    link targets by any path: an untrusted file could make a pipeline deliver the bytes of
    any file this process can read.
    """
    if not allow_external:
        outside = [(what, target) for what, target in data_outside(dset, file) if not _inside(target, file)]
        if outside:
            listed = "; ".join(f"{what} {target}" for what, target in outside)
            raise HDF5InputError(f"{file}: dataset '{path}' reads data from outside the file's folder "
                                 f"({os.path.dirname(file)}): {listed}. Pass allow_external=True to "
                                 f"from_hdf5 to read it anyway (only for files you trust)")
    holder = os.fsdecode(h5f.get_name(dset.id))
    for name, needed in external_raw_files(dset.id, holder):
        try:
            size = os.path.getsize(name)
        except OSError:
            raise HDF5FileNotFoundError(f"{file}: dataset '{path}': its external raw data file {name} "
                                        f"does not exist or cannot be read") from None
        if size < needed:
            raise HDF5InputError(f"{file}: dataset '{path}': its external raw data file {name}: "
                                 f"{shorter_than_data(size, needed)}")


def inspect_files(paths: List[str], datasets: Any, *, with_row_ids: bool = False,
                  allow_external: bool = False) -> Layout:
    """Open every file once (and close it), check everything, and describe the batch.

    allow_external: read datasets whose data lives in other files (external raw data files,
        virtual dataset sources, the target of an external link) wherever those are; by
        default only inside each file's own folder (:func:`check_data_location`).
    """
    kind, keys, dpaths = normalise_datasets(datasets)
    reads: List[DatasetRead] = []
    columns: List[Column] = []
    files: List[FileInfo] = []
    plugin: Dict[int, str] = {}
    first_file = paths[0]
    for fi, file in enumerate(paths):
        with _damage_named(file), open_checked(file) as f:
            n_rows = None
            cache, filtered_rows, readers, chunk_rows, widest = [], [], [], None, -1
            for di, path in enumerate(dpaths):
                with _damage_named(file, path):
                    dset = get_dataset(f, path, file)
                    key = keys[di] if kind == "dict" else None
                    read, cols = _dataset_read(dset, path, file, key, kind)
                    if fi == 0:
                        read.columns = list(range(len(columns), len(columns) + len(cols)))
                        for c in cols:
                            c.dataset = di
                        reads.append(read)
                        columns.extend(cols)
                    else:
                        _check_same(reads[di], [columns[i] for i in reads[di].columns], read, cols,
                                    first_file, file, path)
                    rows = int(dset.shape[0])
                    if n_rows is None:
                        n_rows, first_path = rows, path
                    elif rows != n_rows:
                        raise HDF5InputError(f"{file}: datasets have different numbers of rows: '{first_path}' "
                                             f"has {n_rows}, '{path}' has {rows} (every selected dataset of a "
                                             f"file must have one row per sample)")
                    check_data_location(dset, path, file, allow_external)
                    c_bytes, f_rows, c_rows, usable = _file_settings(dset, read, file, path, plugin)
                    cache.append(c_bytes)
                    filtered_rows.append(f_rows)
                    readers.append(usable)
                    if c_rows is not None and read.row_bytes > widest:
                        chunk_rows, widest = c_rows, read.row_bytes
            files.append(FileInfo(file, n_rows, cache, filtered_rows, readers, chunk_rows))
    if kind == "single" and (len(columns) > 1 or columns[0].field):
        kind, keys = "dict", [c.name for c in columns]
    elif kind == "dict":
        keys = [c.name for c in columns]
        if len(set(keys)) != len(keys):
            raise HDF5InputError(f"datasets: output names collide after expanding compound fields: {keys}")
    if with_row_ids:
        if kind == "dict" and ROW_ID in keys:
            raise HDF5InputError(f"with_row_ids=True adds the key '{ROW_ID}', but datasets already has one")
        columns.append(Column(ROW_ID, None, (), np.dtype(np.int64), ()))
        if kind == "dict":
            keys = keys + [ROW_ID]
        else:
            kind = "tuple"
    return Layout(kind, keys if kind == "dict" else None, files, reads, columns, plugin)


def _check_same(read: DatasetRead, cols: List[Column], other: DatasetRead, other_cols: List[Column],
                first: str, file: str, path: str) -> None:
    a = [(c.field, c.dtype, c.shape) for c in cols]
    b = [(c.field, c.dtype, c.shape) for c in other_cols]
    if a != b or read.kind != other.kind:
        def show(cs):
            return ", ".join(f"{'.'.join(c.field) or 'rows'}: {'string' if c.dtype == object else c.dtype} "
                             f"{c.shape}" for c in cs)
        raise HDF5InputError(f"{file}: dataset '{path}' differs from the same dataset in {first}: "
                             f"[{show(other_cols)}] vs [{show(cols)}] (all files must agree on row shape "
                             f"and dtype)")
