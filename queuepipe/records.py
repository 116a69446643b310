"""Record files, the TF1 way: ``tfrecords`` and ``fixed_length_records``.

They replace TF1's ``string_input_producer`` + ``TFRecordReader`` / ``FixedLengthRecordReader``
+ ``parse_example`` / ``decode_raw`` + ``batch`` / ``shuffle_batch`` with one call, and
take the options of :func:`queuepipe.from_hdf5` (workers, mode, shuffle, num_epochs,
shard, map_fn, ...).  Records are rows: numbered over the files, concatenated, cut into
blocks of whole batches that are dealt to the workers per epoch, each block one read
(DESIGN.md, "The data path"; :mod:`queuepipe.sources.records`).

A TF1 program like::

    queue = tf.train.string_input_producer(files, num_epochs=2, shuffle=True)
    _, serialized = tf.TFRecordReader().read(queue)
    example = tf.parse_single_example(serialized, features)
    image = tf.reshape(tf.decode_raw(example["image"], tf.uint8), [32, 32, 3])
    image = preprocess(image)                         # random crop, flip, whitening
    images, labels = tf.train.shuffle_batch([image, example["label"]], 128, 5000, 1000)

becomes::

    pipe = queuepipe.tfrecords(files, features, batch_size=128, num_epochs=2, shuffle=True,
                               min_after_dequeue=1000, workers=2, mode="process")
    batch = pipe.batch                                # {"image": [128] string, "label": [128] int64}
    images = tf.reshape(tf.io.decode_raw(batch["image"], tf.uint8), [-1, 32, 32, 3])
    images = queuepipe.per_sample(preprocess, images)  # the same per-example function

(``overlap_epochs=True`` as well for ``shuffle_batch``'s mixing of neighbouring epochs.)

**Per-example preprocessing** that ran before ``shuffle_batch`` (CIFAR-10's random crop,
flip and whitening) has two homes now:

* **after the dequeue, in TensorFlow** -- ``queuepipe.per_sample(fn, batch)`` runs the
  TF1 program's own per-example ``fn`` on every example of the batch (``tf.map_fn``; the
  random ops draw per example, as before).  No rewrite; it runs in the training step's
  graph, on TF's threads (on the GPU with ``pipe.staged()``), so it adds to the step
  time but not to the workers'.  Many ``tf.image`` ops take a batch directly
  (``random_flip_left_right``, ``per_image_standardization``) -- faster than per
  example where the op allows it.
* **in the workers, in numpy** -- ``map_fn=fn`` (whole blocks, fastest: vectorise over the
  leading dim) or ``map_fn=fn, map_per_sample=True`` (one example at a time, closest to
  the TF1 code), with ``output_types``/``output_shapes`` describing what it returns.
  It runs beside training, on as many cores as workers (``mode="process"`` for Python
  work); draw random numbers from ``np.random.default_rng(queuepipe.worker_info().seed)``
  (made once per worker) so runs are reproducible.  A numpy CIFAR-10 crop + flip +
  standardisation, per sample (``map_fn=augment, map_per_sample=True``)::

      @functools.lru_cache(maxsize=None)
      def worker_rng(seed):                               # one generator per worker
          return np.random.default_rng(seed)

      def augment(record):                                # uint8 [3073]: label, then CHW pixels
          rng = worker_rng(queuepipe.worker_info().seed)
          image = record[1:].reshape(3, 32, 32).transpose(1, 2, 0).astype(np.float32)
          y, x = rng.integers(0, 9, size=2)               # a random 32x32 crop of the 40x40 padded image
          image = np.pad(image, ((4, 4), (4, 4), (0, 0)))[y:y + 32, x:x + 32]
          if rng.random() < 0.5:
              image = image[:, ::-1]
          image = (image - image.mean()) / max(image.std(), 1 / np.sqrt(image.size))
          return image, np.int64(record[0])

  (``output_types=(tf.float32, tf.int64), output_shapes=((32, 32, 3), ())``; for
  ``mode="process"`` define it in a module without TensorFlow imports.)  Per sample in
  numpy this costs ~0.1 ms an example here (~10 k examples/s per worker process); a
  whole-block ``map_fn`` doing the same with array indexing over the leading dim is
  several times faster.

Neither front door imports TensorFlow until it is called; the sources and the
``tf.train.Example`` decoder (:mod:`queuepipe.sources.records.example_proto`) never do,
so worker processes stay TensorFlow-free.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Tuple

import numpy as np

from .errors import ArgumentError, ArgumentTypeError
from .options import PipelineOptions
from .errors import RecordInputError
from .sources.records.example_proto import FeatureSpec

if TYPE_CHECKING:  # annotations only: importing the TF layer here would import TensorFlow
    from .tf.pipeline import Pipeline


def tfrecords(files: Any, features: Mapping[str, Any], *, batch_size: int, workers: int = 1,
              mode: str = "thread", shuffle: bool = False, min_after_dequeue: Optional[int] = None,
              seed: Optional[int] = None, num_epochs: Optional[int] = 1, shard: Optional[Tuple[int, int]] = None,
              map_fn: Optional[Callable[[Any], Any]] = None, output_types: Any = None, output_shapes: Any = None,
              map_per_sample: bool = False, check_crc: bool = True, capacity: Optional[int] = None,
              allow_smaller_final_batch: bool = False, batches_per_block: Optional[int] = None,
              name: Optional[str] = None, start_method: Optional[str] = None, overlap_epochs: bool = False,
              stall_timeout: Optional[float] = None) -> "Pipeline":
    """Batches of ``tf.train.Example`` features from TFRecord files, parsed in ``workers`` workers.

    files: a path, a glob pattern (matches sorted by name) or a list of them; the files'
        records, concatenated, are the rows (a record's *id* is its position there).
    features: the dict a TF1 program passes to ``tf.io.parse_example``, of
        ``tf.io.FixedLenFeature`` and ``tf.io.VarLenFeature``; ``.batch`` is a dict by
        feature name.  ``FixedLenFeature(shape, dtype, default_value)`` gives
        ``[batch, *shape]``; a record without the feature takes ``default_value`` (without
        one it is an error naming file, record and feature).  ``VarLenFeature(dtype)``
        gives a **dense** ``[batch, longest]`` tensor, padded with 0 / ``b""`` -- what
        ``tf.sparse.to_dense(parse_example(...)[name])`` gives, and TF1's ``dynamic_pad``:
        a queue element cannot hold a ``SparseTensor``; the lengths are not kept (store a
        length feature if padding values can be real ones).  A pipeline with a VarLen
        feature hands over one batch per Python call (slower than whole blocks).
        ``tf.string`` values are ``bytes``.  ``FixedLenSequenceFeature``, ``SparseFeature``
        and ``RaggedFeature`` are refused.  Values equal ``tf.io.parse_example``'s.
    check_crc: verify each record's data checksum (masked CRC-32C) as it is read, like
        TensorFlow's readers; a mismatch raises :class:`~queuepipe.RecordReadError`
        at ``sess.run``, naming file, record and byte offset.  ``False`` skips it: the
        CRC-32C runs in numpy at ~300 MB/s a core, about as long as parsing records of a
        few KB, so skipping it nearly doubles a worker's rate there (small records: ~20 %).
        The length fields' checksums are always checked, while the files are indexed.
    map_fn / output_types / output_shapes / map_per_sample: numpy preprocessing in the
        workers, as in :func:`queuepipe.from_hdf5`: ``map_fn`` receives the dict of feature
        columns (a VarLen feature: an object array of per-record 1-D arrays, unpadded) or,
        with ``map_per_sample``, one record's dict.
    shuffle / seed / min_after_dequeue / num_epochs / shard / workers / mode / capacity /
        allow_smaller_final_batch / batches_per_block / name / start_method /
        overlap_epochs / stall_timeout: as in :func:`queuepipe.from_hdf5` (records for rows).

    Built here, before any worker starts: every file is indexed (its record headers read,
    the length checksums checked); a missing file, a truncated or damaged one (naming the
    byte offset), a GZIP/ZLIB-compressed one (not supported: decompress it first) or an
    unsupported feature is refused with a clear error.  Workers never import TensorFlow:
    the Examples are decoded by queuepipe's own protobuf reader.
    """
    options = _options(batch_size, workers, mode, shuffle, min_after_dequeue, seed, num_epochs, capacity,
                       allow_smaller_final_batch, batches_per_block, name, start_method, overlap_epochs,
                       stall_timeout)
    _check_map_fn(map_fn, output_types, output_shapes, map_per_sample, mode)
    shard = _shard(shard)

    from .build import check_graph_mode
    from .sources.records.files import resolve_paths
    from .sources.records.source import TFRecordFormat
    from .sources.records.tfrecord import index_file

    check_graph_mode()  # here already: before any file is read
    specs = feature_specs(features)
    paths = resolve_paths(files, "TFRecord")
    offsets = [index_file(p) for p in paths]
    total = sum(len(o) - 1 for o in offsets)
    if total == 0:
        raise RecordInputError(f"no records: the {len(paths)} TFRecord file(s) ({_names(paths)}) are empty")
    fmt = TFRecordFormat(paths, offsets, specs, check_crc=check_crc)
    import tensorflow as tf
    default_types = {f.name: (tf.string if f.dtype == np.dtype(object) else tf.as_dtype(f.dtype)) for f in specs}
    record_nbytes = sum(int(o[-1] - o[0]) for o in offsets) / total
    return _build(fmt, total, options, shard, map_fn, output_types, output_shapes, map_per_sample,
                  default_types, record_nbytes)


def fixed_length_records(files: Any, record_bytes: int, header_bytes: int = 0, footer_bytes: int = 0, *,
                         batch_size: int, workers: int = 1, mode: str = "thread", shuffle: bool = False,
                         min_after_dequeue: Optional[int] = None, seed: Optional[int] = None,
                         num_epochs: Optional[int] = 1, shard: Optional[Tuple[int, int]] = None,
                         map_fn: Optional[Callable[[Any], Any]] = None, output_types: Any = None,
                         output_shapes: Any = None, map_per_sample: bool = False,
                         capacity: Optional[int] = None, allow_smaller_final_batch: bool = False,
                         batches_per_block: Optional[int] = None, name: Optional[str] = None,
                         start_method: Optional[str] = None, overlap_epochs: bool = False,
                         stall_timeout: Optional[float] = None) -> "Pipeline":
    """Batches of fixed-length records (TF1's ``FixedLengthRecordReader``), read by ``workers`` workers.

    Each file is ``header_bytes``, then records of ``record_bytes`` each, then
    ``footer_bytes``; a file whose size does not fit that layout is refused, naming the
    file, its size and the layout.  ``.batch`` is ``uint8 [batch, record_bytes]`` -- the
    raw bytes, as ``tf.io.decode_raw`` would see them -- unless ``map_fn`` decodes them
    (numpy, in the workers; declare its results with ``output_types``/``output_shapes``),
    e.g. CIFAR-10's ``record_bytes=3073`` into ``(image uint8 [32, 32, 3], label int64)``::

        def decode(records):                     # uint8 [n, 3073]
            images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            return images, records[:, 0].astype(np.int64)

        pipe = queuepipe.fixed_length_records(files, 3073, map_fn=decode, batch_size=128,
                                              output_types=(tf.uint8, tf.int64),
                                              output_shapes=((32, 32, 3), ()))

    Each block's records are read with one ``preadv`` straight into the block's buffer (in
    a worker process: the shared memory TensorFlow reads), so without ``map_fn`` or
    ``shuffle`` no byte is copied on its way to the queue.  Options as in :func:`tfrecords` and
    :func:`queuepipe.from_hdf5`.  TF1's ``hop_bytes`` is not supported.
    """
    options = _options(batch_size, workers, mode, shuffle, min_after_dequeue, seed, num_epochs, capacity,
                       allow_smaller_final_batch, batches_per_block, name, start_method, overlap_epochs,
                       stall_timeout)
    for arg, value, least in (("record_bytes", record_bytes, 1), ("header_bytes", header_bytes, 0),
                              ("footer_bytes", footer_bytes, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ArgumentError(f"{arg} must be an int >= {least}, got {value!r}")
    _check_map_fn(map_fn, output_types, output_shapes, map_per_sample, mode)
    shard = _shard(shard)

    from .build import check_graph_mode
    from .sources.records.files import resolve_paths
    from .sources.records.fixed_length import inspect_files
    from .sources.records.source import FixedLengthFormat

    check_graph_mode()
    paths = resolve_paths(files, "fixed-length record")
    layout = inspect_files(paths, int(record_bytes), int(header_bytes), int(footer_bytes))
    import tensorflow as tf
    return _build(FixedLengthFormat(layout), sum(layout.counts), options, shard, map_fn, output_types,
                  output_shapes, map_per_sample, tf.uint8, float(record_bytes))


# -- features --------------------------------------------------------------------------------------

def feature_specs(features: Mapping[str, Any]) -> List[FeatureSpec]:
    """``tf.io.FixedLenFeature`` / ``VarLenFeature`` objects -> plain, picklable
    :class:`FeatureSpec` s (TensorFlow is imported here, in the parent, never in a worker)."""
    import tensorflow as tf

    if not isinstance(features, Mapping) or not features:
        raise ArgumentTypeError(f"features must be a non-empty dict {{name: tf.io.FixedLenFeature(...) or "
                                f"tf.io.VarLenFeature(...)}}, as for tf.io.parse_example; got {features!r:.80}")
    out = []
    for key, feature in features.items():
        if not isinstance(key, str):
            raise ArgumentTypeError(f"features: keys are feature names (str), got {key!r}")
        if isinstance(feature, tf.io.FixedLenFeature):
            dtype = _feature_dtype(key, feature.dtype)
            shape = _fixed_shape(key, feature.shape)
            default = None if feature.default_value is None else _default(key, feature.default_value, dtype, shape)
            out.append(FeatureSpec(key, dtype, shape, default))
        elif isinstance(feature, tf.io.VarLenFeature):
            out.append(FeatureSpec(key, _feature_dtype(key, feature.dtype), None))
        else:
            raise ArgumentTypeError(
                f"features[{key!r}]: {type(feature).__name__} is not supported: use tf.io.FixedLenFeature or "
                f"tf.io.VarLenFeature (FixedLenSequenceFeature, SparseFeature and RaggedFeature are not)")
    return out


def _feature_dtype(key: str, dtype: Any) -> np.dtype:
    import tensorflow as tf
    try:
        tf_dtype = tf.as_dtype(dtype)
    except TypeError:
        raise ArgumentTypeError(f"features[{key!r}]: {dtype!r} is not a dtype") from None
    if tf_dtype == tf.string:
        return np.dtype(object)
    if tf_dtype in (tf.float32, tf.int64):
        return np.dtype(tf_dtype.as_numpy_dtype)
    raise ArgumentTypeError(f"features[{key!r}]: dtype {tf_dtype.name} is not supported: a tf.train.Example "
                            f"holds float32, int64 or string (parse as one of those and cast)")


def _fixed_shape(key: str, shape: Any) -> Tuple[int, ...]:
    try:
        dims = list(shape.as_list()) if hasattr(shape, "as_list") else list(shape)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"features[{key!r}]: FixedLenFeature shape {shape!r} is not a shape") from None
    if any(d is None or int(d) < 0 for d in dims):
        raise ArgumentError(f"features[{key!r}]: FixedLenFeature needs a fully defined shape, got {dims}: use "
                            f"tf.io.VarLenFeature for a variable number of values")
    return tuple(int(d) for d in dims)


def _default(key: str, value: Any, dtype: np.dtype, shape: Tuple[int, ...]) -> np.ndarray:
    """``default_value`` as an array of ``shape`` (reshaped as TF does: it must have as many values)."""
    if dtype == np.dtype(object):
        arr = np.array(value, dtype=object)
        flat = arr.reshape(-1)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                flat[i] = v.encode("utf-8")
            elif not isinstance(v, bytes):
                raise ArgumentTypeError(f"features[{key!r}]: default_value of a string feature must hold str or "
                                        f"bytes, got {type(v).__name__}")
    else:
        try:
            arr = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError):
            raise ArgumentTypeError(f"features[{key!r}]: default_value {value!r:.60} is not {dtype.name}") from None
    need = int(np.prod(shape, dtype=np.int64))
    if arr.size != need:
        raise ArgumentError(f"features[{key!r}]: default_value has {arr.size} value(s), but FixedLenFeature shape "
                            f"{list(shape)} needs {need}")
    return arr.reshape(shape)


# -- shared by both front doors --------------------------------------------------------------------

def _options(batch_size, workers, mode, shuffle, min_after_dequeue, seed, num_epochs, capacity,
             allow_smaller_final_batch, batches_per_block, name, start_method, overlap_epochs,
             stall_timeout) -> PipelineOptions:
    return PipelineOptions(batch_size=batch_size, workers=workers, mode=mode, shuffle=shuffle,
                           min_after_dequeue=min_after_dequeue, seed=seed, num_epochs=num_epochs,
                           capacity=capacity, allow_smaller_final_batch=allow_smaller_final_batch,
                           batches_per_block=batches_per_block, name=name, start_method=start_method,
                           overlap_epochs=overlap_epochs, stall_timeout=stall_timeout)


def _check_map_fn(map_fn, output_types, output_shapes, map_per_sample: bool, mode: str) -> None:
    """``map_fn`` and the arguments describing it, checked as ``from_hdf5`` checks them."""
    from .api import check_map_fn
    check_map_fn(map_fn, output_types, output_shapes, map_per_sample, mode, structure_from="the records")


def _shard(shard: Any) -> Optional[Tuple[int, int]]:
    from .api import _check_shard  # the same rule as from_hdf5's shard=
    return _check_shard(shard)


def _names(paths: List[str]) -> str:
    return os.path.basename(paths[0]) + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")


def _build(fmt, total: int, options: PipelineOptions, shard: Optional[Tuple[int, int]], map_fn, output_types,
           output_shapes, map_per_sample: bool, default_types: Any, record_nbytes: float) -> "Pipeline":
    """Selection, spec, source and sizes for a record format, then :func:`queuepipe.build.build`."""
    from .build import build
    from .sources.hdf5.selection import Selection
    from .sources.records.source import plan_record_source
    from .spec import Spec
    from .tf.pipeline import tf_dtypes_of

    selection = Selection.all_rows(total)
    if shard is not None:
        selection = selection.shard(*shard)
    if map_fn is None:
        output_types, spec = default_types, fmt.spec
    else:
        _, np_types = tf_dtypes_of(output_types)
        spec = Spec.build(np_types, output_shapes)
    source, sizes = plan_record_source(fmt, selection, spec, options, record_nbytes=record_nbytes,
                                       map_fn=map_fn, map_per_sample=map_per_sample)
    return build(source, output_types, options, sizes)
