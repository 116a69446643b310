"""Record-file sources: TFRecord files of ``tf.train.Example`` s and fixed-length record files.

The public entry points are :func:`queuepipe.records.tfrecords` and
:func:`queuepipe.records.fixed_length_records`.  Modules, each with one job:

* :mod:`.files` -- the ``files`` argument (a path, a glob or a list) as existing paths;
* :mod:`.tfrecord` -- a TFRecord file's index (built once, in the parent, length
  checksums checked) and the worker's reads of consecutive records;
* :mod:`.fixed_length` -- fixed-length files: layout checks and ``preadv`` reads;
* :mod:`.crc32c` -- CRC-32C in numpy, vectorised over many records (TFRecord checksums);
* :mod:`.example_proto` -- ``tf.train.Example`` decoding (protobuf wire format, no
  TensorFlow), a block of records at a time;
* :mod:`.source` -- the picklable source every worker runs (blocks of records dealt per
  epoch as the HDF5 source deals them) and its sizes;
* :mod:`.errors` -- the errors they raise.

Nothing here imports TensorFlow: worker processes import this package.
"""
