"""Steps 4 and 5 of the data path, the only code that imports TensorFlow: the graph part of a
pipeline (:mod:`.pipeline`), its queue runner (:mod:`.runner`) and ``running(sess)`` (:mod:`.session`)."""
