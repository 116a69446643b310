"""Step 2 of the data path: which worker produces the blocks, and how they reach the parent.

* :mod:`.buffers` -- blocks and the aligned buffers (and allocators) they live in;
* :mod:`.batching` -- a worker's column chunks cut into blocks of whole batches (shuffled or not);
* :mod:`.worker` -- one worker's loop and its plan (how to build worker i of n), the thread backend;
* :mod:`.process` -- the same loop in a child interpreter, blocks shipped through shared memory;
* :mod:`.runtime` -- one run of a pipeline's workers: pulls, the tail merge, the stop event;
* :mod:`.info` -- ``worker_info()``, the identity user code can ask for.

Nothing here imports TensorFlow: worker processes run only this code and the sources.
"""
