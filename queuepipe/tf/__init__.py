"""The thin TensorFlow layer: py_func readers, queues, queue runners, staging."""
