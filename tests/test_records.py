"""queuepipe.records end to end: TFRecord and fixed-length files written by TensorFlow's own
writers, read back in real sessions -- what arrives, how often, as which values, and the errors."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

import queuepipe
from helpers import PROMPT_S, Timer, drain
from queuepipe.errors import ArgumentError, ArgumentTypeError
from queuepipe.preprocessing import per_sample
from queuepipe.records import fixed_length_records, tfrecords
from queuepipe.errors import ExampleParseError, RecordInputError, RecordReadError
from queuepipe.sources.records.example_proto import ExampleDecoder
from queuepipe.records import feature_specs
from records_workerfns import augment, decode_cifar, ids_and_process

tf1 = tf.compat.v1


# -- writing files ----------------------------------------------------------------------------------

def int64s(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def byteses(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def example(i: int) -> bytes:
    """Record ``i``: an id, 3 floats, a name, a variable number of int64s (negative and large ones)
    and of strings, and an optional float (only in even records)."""
    feature = {"id": int64s([i]), "x": floats([i, i + 0.5, -i]), "name": byteses([b"rec-%d" % i]),
               "tags": int64s([(-1) ** j * i * 10 ** (6 * j) for j in range(i % 4)]),
               "words": byteses([b"w%d-%d" % (i, j) for j in range(i % 3)])}
    if i % 2 == 0:
        feature["opt"] = floats([i / 4])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(folder, sizes=(40, 25, 35), make=example, options=None):
    """Files of consecutive records (ids 0.. across the files, in order); their paths."""
    paths, start = [], 0
    for k, n in enumerate(sizes):
        path = str(folder / f"part-{k}.tfrecord")
        with tf.io.TFRecordWriter(path, options) as writer:
            for i in range(start, start + n):
                writer.write(make(i))
        paths.append(path)
        start += n
    return paths


def record_offsets(serialized):
    """Byte offset of each record in a TFRecord file holding ``serialized``."""
    return np.concatenate([[0], np.cumsum([16 + len(s) for s in serialized])])[:-1].tolist()


ID = {"id": tf.io.FixedLenFeature([], tf.int64)}
ALL = {"id": tf.io.FixedLenFeature([], tf.int64), "x": tf.io.FixedLenFeature([3], tf.float32),
       "name": tf.io.FixedLenFeature([], tf.string), "tags": tf.io.VarLenFeature(tf.int64),
       "words": tf.io.VarLenFeature(tf.string), "opt": tf.io.FixedLenFeature([1], tf.float32, default_value=[-7.0])}


def run(make_pipeline, fetch=None):
    """Build a pipeline in a fresh graph, drain it under ``queuepipe.running``; (pipeline, batches)."""
    with tf.Graph().as_default():
        pipe = make_pipeline()
        with tf1.Session() as sess, queuepipe.running(sess):
            return pipe, drain(sess, pipe.batch if fetch is None else fetch(pipe))


def expect_failure(make_pipeline, exc_type):
    """A pipeline whose workers fail: sess.run raises an OpError (not the end of data) and
    ``running`` re-raises ``exc_type`` promptly; (OpError, the exception)."""
    seen = {}
    with tf.Graph().as_default():
        pipe = make_pipeline()
        with tf1.Session() as sess, Timer() as t:
            with pytest.raises(exc_type) as raised:
                with queuepipe.running(sess):
                    try:
                        drain(sess, pipe.batch)
                    except tf.errors.OutOfRangeError:  # pragma: no cover - the failure under test
                        pytest.fail("the worker's failure was reported as the end of data")
                    except tf.errors.OpError as exc:
                        seen["op_error"] = exc
                        raise
        assert t.elapsed < PROMPT_S
    assert "op_error" in seen, "sess.run never raised"
    return seen["op_error"], raised.value


def reference(serialized, features):
    """``tf.io.parse_example`` of ``serialized`` (VarLen features densified), as numpy."""
    with tf.Graph().as_default(), tf1.Session() as sess:
        parsed = tf.io.parse_example(tf.constant(serialized), features)
        return sess.run({k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
                         for k, v in parsed.items()})


def assert_batches_equal(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, (k, got[k].dtype, want[k].dtype)
        assert got[k].shape == want[k].shape, (k, got[k].shape, want[k].shape)
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# -- every record, once per epoch -------------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("workers", [1, 3])
def test_every_record_exactly_once_per_epoch(tmp_path, shuffle, workers):
    paths = write_tfrecords(tmp_path)
    pipe, batches = run(lambda: tfrecords(str(tmp_path / "*.tfrecord"), ID, batch_size=8, workers=workers,
                                          shuffle=shuffle, seed=3, num_epochs=2, batches_per_block=2,
                                          allow_smaller_final_batch=True))
    assert pipe.batch["id"].shape.as_list() == [None] and pipe.batch["id"].dtype == tf.int64
    ids = np.concatenate([b["id"] for b in batches]).tolist()
    assert len(ids) == 200
    first, second = ids[:100], ids[100:]
    assert sorted(first) == list(range(100)) and sorted(second) == list(range(100)), "each epoch: every record once"
    if not shuffle and workers == 1:
        assert first == second == list(range(100)), "one worker, no shuffle: the files' order"
    if shuffle:
        assert first != list(range(100)) and first != second, "shuffled, and differently per epoch"
    assert paths == sorted(paths)


def test_process_workers_parse_without_tensorflow_and_deliver_each_record_once(tmp_path):
    write_tfrecords(tmp_path)
    with tf.Graph().as_default():
        pipe = tfrecords(str(tmp_path / "*.tfrecord"), ID, batch_size=5, workers=2, mode="process",
                         shuffle=True, seed=1, num_epochs=2, batches_per_block=2, map_fn=ids_and_process,
                         output_types={"id": tf.int64, "pid": tf.int64, "tf": tf.bool},
                         output_shapes={"id": (), "pid": (), "tf": ()})
        with tf1.Session() as sess, queuepipe.running(sess):
            batches = drain(sess, pipe.batch)
    ids = np.concatenate([b["id"] for b in batches])
    assert sorted(ids[:100].tolist()) == list(range(100)) and sorted(ids[100:].tolist()) == list(range(100))
    pids = set(np.concatenate([b["pid"] for b in batches]).tolist())
    assert len(pids) == 2 and os.getpid() not in pids, "two worker processes read the records"
    assert not np.concatenate([b["tf"] for b in batches]).any(), "a worker process imported tensorflow"


def test_process_workers_ship_strings_and_padded_variable_length_features(tmp_path):
    paths = write_tfrecords(tmp_path, sizes=(23, 17))
    _, batches = run(lambda: tfrecords(paths, ALL, batch_size=4, workers=2, mode="process", shuffle=True, seed=2))
    assert len(batches) == 10
    for got in batches:  # each batch equals parse_example of the same records (padding per batch)
        assert_batches_equal(got, reference([example(int(i)) for i in got["id"]], ALL))
    assert sorted(np.concatenate([b["id"] for b in batches]).tolist()) == list(range(40))


def test_shards_are_disjoint_contiguous_and_cover_every_record(tmp_path):
    paths = write_tfrecords(tmp_path)
    parts = []
    for index in range(3):
        _, batches = run(lambda: tfrecords(paths, ID, batch_size=4, shard=(index, 3), allow_smaller_final_batch=True))
        parts.append(np.concatenate([b["id"] for b in batches]).tolist())
    assert [len(p) for p in parts] == [33, 33, 34]
    assert sum(parts, []) == list(range(100)), "shards are contiguous, in order, disjoint and cover all"
    with tf.Graph().as_default(), pytest.raises(ValueError, match=r"shard=\(3, 3\)"):
        tfrecords(paths, ID, batch_size=4, shard=(3, 3))


# -- values -----------------------------------------------------------------------------------------

def test_values_equal_parse_example_for_every_feature_kind(tmp_path):
    paths = write_tfrecords(tmp_path)
    serialized = [example(i) for i in range(100)]
    pipe, batches = run(lambda: tfrecords(paths, ALL, batch_size=10))
    assert pipe.batch["x"].shape.as_list() == [10, 3] and pipe.batch["name"].dtype == tf.string
    assert pipe.batch["tags"].shape.as_list() == [10, None] and pipe.batch["opt"].shape.as_list() == [10, 1]
    assert len(batches) == 10
    for k, got in enumerate(batches):
        assert_batches_equal(got, reference(serialized[10 * k:10 * (k + 1)], ALL))
    assert batches[0]["tags"][3].tolist() == [3, -3_000_000, 3_000_000_000_000]
    assert batches[0]["opt"][:2, 0].tolist() == [0.0, -7.0], "a missing feature takes its default_value"


def test_decoder_matches_parse_example_on_edge_values():
    """The TF-free decoder against TensorFlow's own serialisation and parser, block at a time."""
    rng = np.random.default_rng(7)
    extremes = [0, 1, -1, 127, 128, -128, 2 ** 31, -(2 ** 31), 2 ** 63 - 1, -(2 ** 63)]
    serialized = []
    for i in range(60):
        n = int(rng.integers(0, 6))
        feature = {"i": int64s(rng.choice(extremes, n).tolist() if i % 2 else rng.integers(-10 ** 12, 10 ** 12, n)),
                   "f": floats(rng.standard_normal(n).astype(np.float32) if i % 3 else [np.inf, -0.0, 1e-40][:n]),
                   "b": byteses([bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))
                                 for _ in range(n)]),
                   "fixed": floats([i, -i]), "label": byteses(["é-%d".encode() % i] if i % 5 else []),
                   "unused": int64s(range(i))}
        if i % 4 == 0:
            del feature["label"]
        serialized.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    features = {"i": tf.io.VarLenFeature(tf.int64), "f": tf.io.VarLenFeature(tf.float32),
                "b": tf.io.VarLenFeature(tf.string), "fixed": tf.io.FixedLenFeature([2, 1], tf.float32),
                "label": tf.io.VarLenFeature(tf.string)}
    decoder = ExampleDecoder(feature_specs(features))
    buf = b"".join(serialized)
    stops = np.cumsum([len(s) for s in serialized])
    columns = decoder.decode(buf, (stops - [len(s) for s in serialized]).tolist(), stops.tolist(), str)
    want = reference(serialized, features)
    for (name, _), col in zip(features.items(), columns):
        if col.dtype == object and col.ndim == 1 and name != "fixed":  # ragged rows: pad as the reference does
            width = want[name].shape[1]
            fill = b"" if name in ("b", "label") else 0
            col = np.array([list(r) + [fill] * (width - len(r)) for r in col],
                           dtype=want[name].dtype if fill == 0 else object).reshape(len(col), width)
        np.testing.assert_array_equal(col, want[name], err_msg=name)
    assert want["i"].min() == -(2 ** 63) and want["i"].max() == 2 ** 63 - 1


# -- errors -----------------------------------------------------------------------------------------

def test_missing_feature_is_an_error_naming_file_record_and_feature_unless_it_has_a_default(tmp_path):
    def make(i):
        feature = {"id": int64s([i])} if i == 3 else {"id": int64s([i]), "label": int64s([i % 10])}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    path = write_tfrecords(tmp_path, sizes=(10,), make=make)[0]
    required = {"label": tf.io.FixedLenFeature([], tf.int64)}
    op_error, exc = expect_failure(lambda: tfrecords(path, required, batch_size=2), ExampleParseError)
    for text in (path, "record 3 ", "'label'", "missing", "no default_value"):
        assert text in str(exc), (text, str(exc))
    assert "ExampleParseError" in op_error.message and "record 3 " in op_error.message

    with_default = {"label": tf.io.FixedLenFeature([], tf.int64, default_value=-1)}
    _, batches = run(lambda: tfrecords(path, with_default, batch_size=2))
    assert np.concatenate([b["label"] for b in batches]).tolist() == [0, 1, 2, -1, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("feature, text", [
    (tf.io.FixedLenFeature([], tf.float32), "holds a int64_list, but FixedLenFeature([], float32)"),
    (tf.io.FixedLenFeature([2], tf.int64), "has 1 values, but FixedLenFeature([2], int64) needs 2"),
    (tf.io.VarLenFeature(tf.string), "expects a bytes_list"),
])
def test_a_feature_of_the_wrong_type_or_length_is_an_error_naming_the_record(tmp_path, feature, text):
    path = write_tfrecords(tmp_path, sizes=(6,))[0]
    _, exc = expect_failure(lambda: tfrecords(path, {"id": feature}, batch_size=2), ExampleParseError)
    assert path in str(exc) and "record 0 " in str(exc) and text in str(exc), str(exc)


def test_unsupported_features_are_refused_at_build_time(tmp_path):
    path = write_tfrecords(tmp_path, sizes=(4,))[0]
    cases = [({"x": tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True)}, ArgumentTypeError,
              "FixedLenSequenceFeature is not supported"),
             ({"x": tf.io.FixedLenFeature([], tf.int32)}, ArgumentTypeError, "int32 is not supported"),
             ({"x": tf.io.FixedLenFeature([3], tf.int64, default_value=1)}, ArgumentError,
              "default_value has 1 value"),
             ({"x": tf.io.FixedLenFeature([None], tf.int64)}, ArgumentError, "fully defined shape"),
             ({}, ArgumentTypeError, "non-empty dict")]
    for features, exc_type, text in cases:
        with tf.Graph().as_default(), pytest.raises(exc_type, match=text):
            tfrecords(path, features, batch_size=2)


def test_damaged_files_are_refused_at_build_time_naming_file_and_byte_offset(tmp_path):
    serialized = [example(i) for i in range(10)]
    offsets = record_offsets(serialized)
    path = write_tfrecords(tmp_path, sizes=(10,))[0]
    data = open(path, "rb").read()

    def refused(content, *texts):
        bad = str(tmp_path / "bad.tfrecord")
        with open(bad, "wb") as f:
            f.write(content)
        with tf.Graph().as_default(), pytest.raises(RecordInputError) as info:
            tfrecords([path, bad], ID, batch_size=2)
        for text in (bad,) + texts:
            assert text in str(info.value), (text, str(info.value))

    refused(data[:-5], "truncated", f"byte offset {offsets[9]}")                 # cut inside the last record
    refused(data[:offsets[9] + 7], "truncated", f"at byte offset {offsets[9]}", "record header")
    header = bytearray(data)
    header[offsets[4] + 2] ^= 0x10                                                 # a length byte of record 4
    refused(bytes(header), "corrupt record header", f"byte offset {offsets[4]}", "record 4")
    refused(gzip.compress(data), "GZIP")
    (tmp_path / "zlib").mkdir()
    zlib_path = write_tfrecords(tmp_path / "zlib", sizes=(3,), options=tf.io.TFRecordOptions(compression_type="ZLIB"))[0]
    refused(open(zlib_path, "rb").read(), "ZLIB")


def test_corrupt_record_data_fails_at_run_time_unless_checksums_are_skipped(tmp_path):
    serialized = [example(i) for i in range(10)]
    offsets = record_offsets(serialized)
    path = write_tfrecords(tmp_path, sizes=(10,))[0]
    data = bytearray(open(path, "rb").read())
    at = offsets[5] + 12 + serialized[5].index(b"rec-5") + 4                     # the name's '5'
    data[at] = ord("X")
    with open(path, "wb") as f:
        f.write(data)
    _, exc = expect_failure(lambda: tfrecords(path, {"name": ALL["name"]}, batch_size=2), RecordReadError)
    for text in (path, "record 5 ", f"byte offset {offsets[5]}", "checksum", "check_crc=False"):
        assert text in str(exc), (text, str(exc))
    _, batches = run(lambda: tfrecords(path, {"name": ALL["name"]}, batch_size=2, check_crc=False))
    names = np.concatenate([b["name"] for b in batches]).tolist()
    assert names[5] == b"rec-X" and names[4] == b"rec-4"


def test_files_argument_errors_name_the_path(tmp_path):
    with tf.Graph().as_default():
        with pytest.raises(FileNotFoundError, match="no file matches"):
            tfrecords(str(tmp_path / "*.tfrecord"), ID, batch_size=2)
        empty = tmp_path / "empty.tfrecord"
        empty.write_bytes(b"")
        with pytest.raises(RecordInputError, match="no records"):
            tfrecords(str(empty), ID, batch_size=2)
        with pytest.raises(ArgumentError, match="map_fn needs output_types"):
            tfrecords(str(empty), ID, batch_size=2, map_fn=decode_cifar)


# -- fixed-length records ---------------------------------------------------------------------------

def cifar_records(start: int, n: int) -> np.ndarray:
    """CIFAR-10-like records: label ``i % 10``, then 3072 CHW pixel bytes whose first two
    (channel 0, row 0, columns 0 and 1) spell the record id ``i``."""
    rng = np.random.default_rng(start)
    records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    ids = np.arange(start, start + n)
    records[:, 0] = ids % 10
    records[:, 1], records[:, 2] = ids // 256, ids % 256
    return records


def write_cifar(folder, sizes=(30, 45), header=0, footer=0):
    paths, start = [], 0
    for k, n in enumerate(sizes):
        path = str(folder / f"data_batch_{k}.bin")
        with tf.io.gfile.GFile(path, "wb") as f:  # TensorFlow's own writer
            f.write(b"H" * header + cifar_records(start, n).tobytes() + b"F" * footer)
        paths.append(path)
        start += n
    return paths


@pytest.mark.parametrize("header, footer", [(0, 0), (16, 8)])
def test_fixed_length_records_are_the_files_bytes_uint8(tmp_path, header, footer):
    paths = write_cifar(tmp_path, header=header, footer=footer)
    pipe, batches = run(lambda: fixed_length_records(paths, 3073, header, footer, batch_size=15))
    assert pipe.batch.dtype == tf.uint8 and pipe.batch.shape.as_list() == [15, 3073]
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate([cifar_records(0, 30), cifar_records(30, 45)]))


def test_fixed_length_map_fn_decodes_cifar_images_and_labels(tmp_path):
    paths = write_cifar(tmp_path)
    pipe, batches = run(lambda: fixed_length_records(
        paths, 3073, batch_size=5, workers=2, shuffle=True, seed=0, num_epochs=2, batches_per_block=2,
        map_fn=decode_cifar, output_types=(tf.uint8, tf.int64), output_shapes=((32, 32, 3), ())))
    assert pipe.batch[0].shape.as_list() == [5, 32, 32, 3] and pipe.batch[1].dtype == tf.int64
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    ids = images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 1, 0]
    assert sorted(ids[:75].tolist()) == list(range(75)) and sorted(ids[75:].tolist()) == list(range(75))
    assert (labels == ids % 10).all()
    want = np.concatenate([cifar_records(0, 30), cifar_records(30, 45)])[ids]
    np.testing.assert_array_equal(images, want[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def test_fixed_length_process_workers_write_records_into_shared_memory(tmp_path):
    paths = write_cifar(tmp_path, header=4)
    _, batches = run(lambda: fixed_length_records(paths, 3073, header_bytes=4, batch_size=5, workers=2,
                                                  mode="process", shuffle=True, num_epochs=2, batches_per_block=3))
    records = np.concatenate(batches)
    ids = records[:, 1].astype(int) * 256 + records[:, 2]
    assert sorted(ids[:75].tolist()) == list(range(75)) and sorted(ids[75:].tolist()) == list(range(75))
    np.testing.assert_array_equal(records, np.concatenate([cifar_records(0, 30), cifar_records(30, 45)])[ids])


def test_fixed_length_file_of_the_wrong_size_is_refused_naming_file_size_and_layout(tmp_path):
    good = write_cifar(tmp_path, sizes=(3,))[0]
    bad = str(tmp_path / "bad.bin")
    with open(bad, "wb") as f:
        f.write(bytes(3073 * 5 + 7))
    with tf.Graph().as_default(), pytest.raises(RecordInputError) as info:
        fixed_length_records([good, bad], 3073, batch_size=2)
    for text in (bad, str(3073 * 5 + 7), "0 + n * 3073 + 0", "5 records and 7 bytes left over"):
        assert text in str(info.value), (text, str(info.value))
    with tf.Graph().as_default(), pytest.raises(ArgumentError, match="record_bytes must be an int >= 1"):
        fixed_length_records(good, 0, batch_size=2)


# -- per-example preprocessing ----------------------------------------------------------------------

def cifar_pipeline(paths, **kwargs):
    return fixed_length_records(paths, 3073, batch_size=15, map_fn=decode_cifar, output_types=(tf.uint8, tf.int64),
                                output_shapes=((32, 32, 3), ()), **kwargs)


def test_per_sample_runs_a_per_example_function_on_each_example_of_the_batch(tmp_path):
    paths = write_cifar(tmp_path)

    def fn(example):                       # one example in, a different structure out
        image, label = example
        return {"flipped": tf.reverse(image, [1]), "label": label + 100}
    _, batches = run(lambda: cifar_pipeline(paths), fetch=lambda pipe: per_sample(fn, pipe.batch))
    assert len(batches) == 5
    want = decode_cifar(np.concatenate([cifar_records(0, 30), cifar_records(30, 45)]))
    np.testing.assert_array_equal(np.concatenate([b["flipped"] for b in batches]), want[0][:, :, ::-1])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), want[1] + 100)


def test_per_sample_cifar10_augmentation_keeps_static_shapes_and_standardises_each_image(tmp_path):
    paths = write_cifar(tmp_path)

    def distort(image):                    # the TF1 CIFAR-10 tutorial's per-example distortion
        image = tf.image.random_crop(tf.cast(image, tf.float32), [24, 24, 3])
        image = tf.image.random_flip_left_right(image)
        return tf.image.per_image_standardization(image)

    def fetch(pipe):
        images = per_sample(distort, pipe.batch[0])
        assert images.shape.as_list() == [15, 24, 24, 3]
        return images
    _, batches = run(lambda: cifar_pipeline(paths), fetch=fetch)
    images = np.concatenate(batches)
    assert images.shape == (75, 24, 24, 3)
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 1, atol=1e-3)


def test_numpy_per_sample_augmentation_in_the_workers_recipe(tmp_path):
    paths = write_cifar(tmp_path)
    pipe, batches = run(lambda: fixed_length_records(
        paths, 3073, batch_size=15, seed=5, map_fn=augment, map_per_sample=True,
        output_types=(tf.float32, tf.int64), output_shapes=((32, 32, 3), ())))
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.shape == (75, 32, 32, 3) and labels.tolist() == [i % 10 for i in range(75)]
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 1, atol=1e-3)
