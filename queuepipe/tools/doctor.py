"""``queuepipe doctor PATH``: find the TF1 input code of a codebase and say what replaces it.

Why: moving a TF1-era training program onto queuepipe starts with knowing where its input side
lives -- a ``feed_dict`` loop over a Python generator, ``string_input_producer`` + a reader +
``tf.train.batch``, ``py_func`` + ``FIFOQueue`` + ``QueueRunner``, hand-made enqueue threads,
tftables, Keras ``HDF5Matrix`` / ``fit_generator``, slim's ``prefetch_queue`` -- and which of the
classic mistakes of that era it carries: ``num_epochs`` without ``local_variables_initializer``,
enqueue threads neither daemon nor joined, ``py_func`` readers that return one sample per call,
``feed_dict`` filled from a generator inside the training loop.

What: every ``*.py`` file under PATH is parsed with :mod:`ast` -- never imported, never run, so a
scan executes none of the codebase's code and needs neither TensorFlow nor the codebase's
dependencies (this module imports neither).  Each :class:`Finding` prints as
``path:line: [code] message -> replacement``; its kind is ``pattern`` (input code that queuepipe
replaces), ``pitfall`` (a classic mistake) or ``note`` (outside the input side: Python 2 leftovers
and ``tf.contrib`` uses, counted once per file; or a file that did not parse).  A file that does
not parse (Python 2's ``print x``) is reported as such and still searched line by line for the
pattern names.

Every rule is a heuristic, and the messages of the data-flow ones say so: names are matched on the
final element of an attribute chain whose root is a TensorFlow / Keras / tftables alias
(``import tensorflow as tf``, ``import tensorflow.compat.v1 as tf``, ``tf1 = tf.compat.v1``,
``from tensorflow.contrib import slim``; ``tf``, ``tf1`` and ``slim`` are assumed even without a
visible import), and values are followed by variable name within one file.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, TextIO, Tuple

PATTERN, PITFALL, NOTE = "pattern", "pitfall", "note"
KIND_ORDER = {PATTERN: 0, PITFALL: 1, NOTE: 2}


@dataclass(frozen=True)
class Finding:
    """One thing the doctor saw at ``path:line``.

    ``kind``: ``'pattern'`` (TF1 input code queuepipe replaces), ``'pitfall'`` (a classic mistake
    of TF1 input code) or ``'note'`` (outside the input side, or a file that did not parse).
    ``code``: a stable short name, e.g. ``pattern-producer`` or ``pitfall-num-epochs``.
    ``replacement``: what to write instead ('' when there is nothing to replace)."""

    path: str
    line: int
    kind: str
    code: str
    message: str
    replacement: str = ""

    def format(self) -> str:
        """``path:line: [code] message -> replacement``."""
        text = f"{self.path}:{self.line}: [{self.code}] {self.message}"
        return f"{text} -> {self.replacement}" if self.replacement else text

    def sort_key(self) -> Tuple[str, int, int, str]:
        return (self.path, self.line, KIND_ORDER.get(self.kind, 3), self.code)


Advice = Tuple[str, str]  # (message, replacement)

# --------------------------------------------------------------------------------------
# What the doctor knows: TF1 names and what replaces them
# --------------------------------------------------------------------------------------

#: Roots of the libraries whose names the rules match.
LIBRARY_ROOTS = frozenset({"tensorflow", "keras", "tftables"})
#: Names taken for these libraries when the file's import is not visible (a parameter, a star import).
ASSUMED_ALIASES = {"tf": "tensorflow", "tf1": "tensorflow.compat.v1", "tensorflow": "tensorflow",
                   "slim": "tensorflow.contrib.slim", "keras": "keras", "tftables": "tftables"}

PRODUCERS = frozenset({"string_input_producer", "input_producer", "slice_input_producer", "range_input_producer"})
READER_REPLACEMENTS = {
    "TFRecordReader": "queuepipe.tfrecords(files, features=...)",
    "FixedLengthRecordReader": "queuepipe.fixed_length_records(files, record_bytes, ...)",
    "TextLineReader": "queuepipe.from_generator(a generator over the files' lines, ...), "
                      "or convert the data to HDF5 and use queuepipe.from_hdf5(files, datasets, ...)",
    "WholeFileReader": "queuepipe.from_generator(a generator that reads and decodes each file, ...), "
                       "or convert the data to HDF5 and use queuepipe.from_hdf5(files, datasets, ...)",
}
READERS = frozenset(READER_REPLACEMENTS)
BATCHERS = frozenset({"batch", "shuffle_batch", "batch_join", "shuffle_batch_join", "maybe_batch",
                      "maybe_shuffle_batch", "maybe_batch_join", "maybe_shuffle_batch_join"})
QUEUES = frozenset({"FIFOQueue", "RandomShuffleQueue", "PaddingFIFOQueue", "PriorityQueue"})
QUEUE_RUNNERS = frozenset({"QueueRunner", "add_queue_runner"})
PY_FUNCS = frozenset({"py_func", "numpy_function", "py_function"})
KERAS_GENERATOR_METHODS = frozenset({"fit_generator", "evaluate_generator", "predict_generator"})
KERAS_CLASSES = frozenset({"HDF5Matrix", "GeneratorEnqueuer", "OrderedEnqueuer"})
LOCAL_INITIALIZERS = frozenset({"local_variables_initializer", "initialize_local_variables"})
#: Sessions whose default Scaffold / local_init_op initialises local variables.
SESSIONS_INITIALISING_LOCALS = frozenset({"MonitoredTrainingSession", "MonitoredSession",
                                          "SingularMonitoredSession", "Supervisor"})
#: Calls whose result a for loop iterates without it being a data generator.
NOT_GENERATORS = frozenset({"range", "xrange", "arange", "linspace", "len", "items", "keys", "values",
                            "iteritems", "iterkeys", "itervalues", "sorted", "reversed", "list", "tuple",
                            "set", "dict", "trange"})

FROM_GENERATOR = ("queuepipe.from_generator(obj.generate_data, output_types, output_shapes, batch_size=..., "
                  "workers=...); use pipe.batch (or pipe.staged()) in the graph and sess.run(train_op) "
                  "with no feed_dict")
GENERIC_FILE_INPUT = ("queuepipe.from_hdf5(files, datasets, batch_size=...) for HDF5, "
                      "queuepipe.tfrecords(files, features=...) for TFRecords, queuepipe.from_generator(...) otherwise")

PY2_BUILTINS = frozenset({"xrange", "unicode", "basestring", "raw_input", "unichr", "execfile"})
PY2_METHODS = frozenset({"iteritems", "iterkeys", "itervalues", "has_key"})
PY2_MODULES = frozenset({"cPickle", "Queue", "urllib2", "StringIO", "cStringIO", "ConfigParser",
                         "__builtin__", "six", "future", "past"})
PY2_FUTURES = frozenset({"absolute_import", "division", "print_function", "unicode_literals",
                         "with_statement", "generators", "nested_scopes"})

SKIPPED_DIRECTORIES = frozenset({"__pycache__", "node_modules", "site-packages"})

# --------------------------------------------------------------------------------------
# Advice: one function per finding code, shared by the ast rules and the regex fallback
# --------------------------------------------------------------------------------------


def reader_pipeline_replacement(readers: Iterable[str]) -> str:
    """The queuepipe source that fits the TF1 readers found in a file."""
    fitting = [READER_REPLACEMENTS[name] for name in sorted(set(readers)) if name in READER_REPLACEMENTS]
    return "; or ".join(fitting) if fitting else GENERIC_FILE_INPUT


def advise_producer(shown: str, readers: Iterable[str]) -> Advice:
    return (f"{shown}(...): TF1 queue input (a producer queue that QueueRunner threads fill)",
            reader_pipeline_replacement(readers))


def advise_reader(shown: str, reader: str) -> Advice:
    return (f"{shown}(...): reads records inside the graph, one reader op run per record",
            READER_REPLACEMENTS.get(reader, GENERIC_FILE_INPUT))


def advise_batch(shown: str, batcher: str, readers: Iterable[str]) -> Advice:
    arguments = "batch_size=..."
    if "shuffle" in batcher:
        arguments += ", shuffle=True, min_after_dequeue=..., capacity=... (the workers shuffle, in numpy)"
    return (f"{shown}(...): batches through a TF queue and its QueueRunner threads",
            f"{reader_pipeline_replacement(readers)}; pass {arguments}")


def advise_queue(shown: str, queue: str, fed_by_threads: bool) -> Advice:
    if fed_by_threads or queue == "PaddingFIFOQueue":
        return (f"{shown}(...): a hand-built input queue{' fed by Python threads' if fed_by_threads else ''}",
                "queuepipe.from_generator(your reader's generator, output_types, output_shapes, batch_size=..., "
                "dynamic_pad=True): its workers replace the threads, placeholder and enqueue op")
    return (f"{shown}(...): a hand-built input queue",
            "queuepipe.from_generator(...): the pipeline owns its queue; dequeue becomes pipe.batch")


def advise_queue_runner(shown: str) -> Advice:
    return (f"{shown}(...): input threads registered by hand",
            "nothing: queuepipe adds its own QueueRunner; start_queue_runners, MonitoredTrainingSession "
            "or `with queuepipe.running(sess):` start it")


def advise_py_func(shown: str) -> Advice:
    return (f"{shown}(...): Python data code run as a graph op that feeds a TF queue",
            "queuepipe.from_generator(a generator of that code, ...): it runs on N thread or process workers")


def advise_tftables_import(shown: str) -> Advice:
    return (f"{shown}: tftables reads HDF5 into a TF queue", "import queuepipe.compat.tftables as tftables")


def advise_tftables_call(shown: str) -> Advice:
    return (f"{shown}(...): tftables input", "unchanged once tftables is queuepipe.compat.tftables "
            "(or queuepipe.from_hdf5(file, datasets, batch_size=...) directly)")


def advise_keras(shown: str, name: str) -> Advice:
    if name == "HDF5Matrix":
        return (f"{shown}(...): Keras reads HDF5 rows by index on the training thread",
                "model.fit(queuepipe.compat.keras.hdf5_dataset(files, {\"x\": \"/X\", \"y\": \"/y\"}, "
                "batch_size=...)), or queuepipe.from_hdf5(...) and pipe.numpy_batches()")
    if name == "Sequence":
        message = f"class based on {shown}: a Keras batch producer"
    else:
        message = f"{shown}(...): Keras generator input (enqueuer threads / processes)"
    return (message,
            "model.fit(queuepipe.compat.keras.PipelineDataset(make_pipeline, batches_per_epoch)), make_pipeline "
            "building queuepipe.from_generator(..., workers=N, mode=\"process\"); or pipe.numpy_batches()")


def advise_slim_prefetch(shown: str) -> Advice:
    return (f"{shown}(...): slim's prefetch queue over already-batched tensors",
            "queuepipe.compat.slim.prefetch_queue.prefetch_queue (same arguments), or pipe.dequeue() per tower")


def advise_feed_loop(shown: str) -> Advice:
    return (f"training loop fed from a Python generator/iterator through feed_dict ({shown})", FROM_GENERATOR)


# --------------------------------------------------------------------------------------
# Small ast helpers
# --------------------------------------------------------------------------------------


def dotted_name(node: ast.AST) -> Optional[str]:
    """``a.b.c`` for a chain of attributes on a name; None for anything else (calls, subscripts)."""
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def last_name(node: ast.AST) -> Optional[str]:
    """The final identifier of a name or attribute chain (``tf.train.batch`` -> ``batch``)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def source_text(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def references(node: ast.AST) -> Set[str]:
    """Variable names and attribute chains (``self.x``) an expression reads."""
    found: Set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id)
        elif isinstance(child, ast.Attribute):
            chain = dotted_name(child)
            if chain:
                found.add(chain)
    return found


def sliced_references(node: ast.AST) -> Set[str]:
    """Names and chains that an expression slices (``x`` in ``x[a:b]``)."""
    return {dotted_name(child.value) for child in ast.walk(node)  # type: ignore[misc]
            if isinstance(child, ast.Subscript) and isinstance(child.slice, ast.Slice) and dotted_name(child.value)}


def assigned_names(target: ast.AST) -> Set[str]:
    """What an assignment target binds: names, ``self.x`` chains, the base of ``d[k] = ...``."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(assigned_names(element) for element in target.elts)) if target.elts else set()
    if isinstance(target, ast.Starred):
        return assigned_names(target.value)
    if isinstance(target, ast.Subscript):
        return assigned_names(target.value)
    chain = dotted_name(target)
    return {chain} if chain else set()


def assignment_parts(node: ast.AST) -> Optional[Tuple[List[ast.AST], ast.AST]]:
    """(targets, value) of an Assign / AugAssign / AnnAssign with a value; else None."""
    if isinstance(node, ast.Assign):
        return list(node.targets), node.value
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
        return [node.target], node.value
    return None


def walk_same_scope(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node under ``nodes``, not descending into nested functions, lambdas or classes."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                stack.append(child)


def keyword_value(call: ast.Call, name: str) -> Optional[ast.AST]:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def is_constant(node: Optional[ast.AST], value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def taint_through_assignments(assignments: Sequence[ast.AST], tainted: Set[str]) -> Set[str]:
    """Grow ``tainted`` with every name assigned from an expression that reads a tainted name."""
    tainted = set(tainted)
    changed = True
    while changed:
        changed = False
        for node in assignments:
            targets, value = assignment_parts(node)  # type: ignore[misc]
            if references(value) & tainted:
                new = set().union(*(assigned_names(t) for t in targets)) - tainted
                if new:
                    tainted |= new
                    changed = True
    return tainted


# --------------------------------------------------------------------------------------
# One parsed file
# --------------------------------------------------------------------------------------


def import_aliases(nodes: Sequence[ast.AST]) -> Dict[str, str]:
    """Local name -> dotted module path, from every import of the file and from assignments of
    library chains (``tf1 = tf.compat.v1``, ``slim = tf.contrib.slim``)."""
    aliases = dict(ASSUMED_ALIASES)
    imports = sorted((n for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom))), key=lambda n: n.lineno)
    for node in imports:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
        elif node.module and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in sorted((n for n in nodes if isinstance(n, ast.Assign)), key=lambda n: n.lineno):
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            resolved = resolve_chain(node.value, aliases)
            if resolved and resolved.split(".")[0] in LIBRARY_ROOTS:
                aliases[node.targets[0].id] = resolved
    return aliases


def resolve_chain(node: ast.AST, aliases: Dict[str, str]) -> Optional[str]:
    """The dotted chain of ``node`` with its root replaced by what it was imported as."""
    chain = dotted_name(node)
    if chain is None:
        return None
    root, _, rest = chain.partition(".")
    if root not in aliases:
        return chain
    return f"{aliases[root]}.{rest}" if rest else aliases[root]


class ParsedFile:
    """A parsed file and what the rules ask of it: aliases, parents, definitions, calls."""

    def __init__(self, path: str, tree: ast.Module) -> None:
        self.path = path
        self.tree = tree
        self.nodes = list(ast.walk(tree))
        self.parents = {child: node for node in self.nodes for child in ast.iter_child_nodes(node)}
        self.calls = sorted((n for n in self.nodes if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
        self.aliases = import_aliases(self.nodes)
        self.functions: Dict[str, List[ast.AST]] = {}
        for node in self.nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, []).append(node)

    def qualified(self, node: ast.AST) -> Optional[str]:
        return resolve_chain(node, self.aliases)

    def library_name(self, node: ast.AST) -> Optional[str]:
        """The resolved chain when it is rooted at TensorFlow, Keras or tftables; else None."""
        resolved = self.qualified(node)
        return resolved if resolved and resolved.split(".")[0] in LIBRARY_ROOTS else None

    def library_call(self, call: ast.Call) -> Optional[str]:
        """The final name of a call to a library function (``tf1.train.batch(...)`` -> ``batch``)."""
        resolved = self.library_name(call.func)
        return resolved.rsplit(".", 1)[-1] if resolved else None

    def is_train_batcher(self, call: ast.Call) -> bool:
        resolved = self.library_name(call.func)
        parts = resolved.split(".") if resolved else []
        return bool(parts) and parts[-1] in BATCHERS and "train" in parts[:-1]

    def from_queuepipe(self, node: ast.AST) -> bool:
        resolved = self.qualified(node)
        return bool(resolved) and resolved.split(".")[0] == "queuepipe"  # type: ignore[union-attr]

    def mentions(self, names: Iterable[str]) -> bool:
        wanted = set(names)
        return any(last_name(node) in wanted for node in self.nodes if isinstance(node, (ast.Name, ast.Attribute)))

    def defined_functions(self, reference: ast.AST) -> List[ast.AST]:
        """The functions of this file that ``f`` / ``self.f`` / ``obj.f`` may name (by final name)."""
        name = last_name(reference)
        return self.functions.get(name, []) if name else []

    def enclosing_scope(self, node: ast.AST) -> ast.AST:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return node
        return self.tree

    def finding(self, node: ast.AST, kind: str, code: str, advice: Advice) -> Finding:
        message, replacement = advice
        return Finding(self.path, getattr(node, "lineno", 1), kind, code, message, replacement)


# --------------------------------------------------------------------------------------
# Rules for patterns 2, 3, 5, 6, 7: names of TF1 input machinery
# --------------------------------------------------------------------------------------


def find_reader_pipelines(f: ParsedFile) -> Iterator[Finding]:
    """Pattern 2: input producers, record readers and ``tf.train.batch``-family calls."""
    readers = {name for name in map(f.library_call, f.calls) if name in READERS}
    for call in f.calls:
        name = f.library_call(call)
        shown = source_text(call.func)
        if name in PRODUCERS:
            yield f.finding(call, PATTERN, "pattern-producer", advise_producer(shown, readers))
        elif name in READERS:
            yield f.finding(call, PATTERN, "pattern-reader", advise_reader(shown, name))
        elif f.is_train_batcher(call):
            yield f.finding(call, PATTERN, "pattern-batch", advise_batch(shown, name or "", readers))


def find_queue_pipelines(f: ParsedFile) -> Iterator[Finding]:
    """Pattern 3 (and the queue of pattern 4): TF queues, queue runners, and py_func feeding them."""
    fed_by_threads = any(True for _ in enqueue_threads(f))
    feeds_a_queue = False
    for call in f.calls:
        name = f.library_call(call)
        shown = source_text(call.func)
        if name in QUEUES:
            feeds_a_queue = True
            yield f.finding(call, PATTERN, "pattern-queue", advise_queue(shown, name, fed_by_threads))
        elif name in QUEUE_RUNNERS:
            feeds_a_queue = True
            yield f.finding(call, PATTERN, "pattern-queue-runner", advise_queue_runner(shown))
        elif f.is_train_batcher(call):
            feeds_a_queue = True
    if feeds_a_queue:
        for call in f.calls:
            if f.library_call(call) in PY_FUNCS:
                yield f.finding(call, PATTERN, "pattern-py-func", advise_py_func(source_text(call.func)))


def find_tftables(f: ParsedFile) -> Iterator[Finding]:
    """Pattern 5: ``import tftables``, ``tftables.open_file``, ``reader.get_fifoloader``."""
    for node in f.nodes:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "tftables" for a in node.names):
            yield f.finding(node, PATTERN, "pattern-tftables", advise_tftables_import(source_text(node)))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tftables" and not node.level:
            yield f.finding(node, PATTERN, "pattern-tftables", advise_tftables_import(source_text(node)))
    migrated = "queuepipe.compat.tftables" in f.aliases.values()  # its loaders have get_fifoloader too
    for call in f.calls:
        if f.qualified(call.func) == "tftables.open_file" or (
                last_name(call.func) == "get_fifoloader" and not migrated):
            yield f.finding(call, PATTERN, "pattern-tftables", advise_tftables_call(source_text(call.func)))


def find_keras_inputs(f: ParsedFile) -> Iterator[Finding]:
    """Pattern 6: ``HDF5Matrix``, ``fit_generator`` & co, enqueuers, ``keras.utils.Sequence`` subclasses."""
    for call in f.calls:
        name = last_name(call.func)
        if name in KERAS_GENERATOR_METHODS | KERAS_CLASSES and not f.from_queuepipe(call.func):
            yield f.finding(call, PATTERN, "pattern-keras", advise_keras(source_text(call.func), name or ""))
    for node in f.nodes:
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                resolved = f.library_name(base)
                if resolved and resolved.endswith(".Sequence") and resolved.split(".")[0] in ("keras", "tensorflow"):
                    yield f.finding(node, PATTERN, "pattern-keras", advise_keras(source_text(base), "Sequence"))


def find_slim_prefetch(f: ParsedFile) -> Iterator[Finding]:
    """Pattern 7: ``slim.prefetch_queue.prefetch_queue(...)``."""
    for call in f.calls:
        if f.library_call(call) == "prefetch_queue":
            yield f.finding(call, PATTERN, "pattern-slim-prefetch", advise_slim_prefetch(source_text(call.func)))


# --------------------------------------------------------------------------------------
# Pattern 4 and pitfall (b): Python threads that run an enqueue op
# --------------------------------------------------------------------------------------


def is_enqueue_call(call: ast.Call) -> bool:
    """``q.enqueue(...)``, ``q.enqueue_many(...)``, or ``sess.run(<something named enqueue>, ...)``."""
    name = last_name(call.func)
    if name in ("enqueue", "enqueue_many"):
        return True
    return name == "run" and bool(call.args) and "enqueue" in ast.unparse(call.args[0]).lower()


def runs_an_enqueue(f: ParsedFile, target: ast.AST, depth: int = 2) -> bool:
    """Whether a thread target (a function of this file, or a lambda) runs an enqueue, directly
    or through functions of this file it calls (``depth`` levels)."""
    bodies = [target.body] if isinstance(target, ast.Lambda) else f.defined_functions(target)
    for body in bodies:
        for node in ast.walk(body):
            if isinstance(node, ast.Call):
                if is_enqueue_call(node):
                    return True
                if depth > 0 and node.func is not target and runs_an_enqueue(f, node.func, depth - 1):
                    return True
    return False


def thread_target(call: ast.Call) -> Optional[ast.AST]:
    target = keyword_value(call, "target")
    if target is None and len(call.args) >= 2:  # Thread(group, target, ...)
        target = call.args[1]
    return target


def enqueue_threads(f: ParsedFile) -> Iterator[ast.Call]:
    """``threading.Thread(target=...)`` calls whose target runs an enqueue op."""
    for call in f.calls:
        if f.qualified(call.func) in ("threading.Thread", "Thread"):
            target = thread_target(call)
            if target is not None and runs_an_enqueue(f, target):
                yield call


def daemon_holders(f: ParsedFile) -> Set[str]:
    """Chains set daemon: ``x.daemon = True`` or ``x.setDaemon(True)``."""
    holders: Set[str] = set()
    for node in f.nodes:
        if isinstance(node, ast.Assign) and is_constant(node.value, True):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr == "daemon":
                    holders.add(ast.unparse(target.value))
        elif (isinstance(node, ast.Call) and last_name(node.func) == "setDaemon" and node.args
              and is_constant(node.args[0], True) and isinstance(node.func, ast.Attribute)):
            holders.add(ast.unparse(node.func.value))
    return holders


def thread_is_daemon(f: ParsedFile, call: ast.Call, holders: Set[str]) -> bool:
    if is_constant(keyword_value(call, "daemon"), True):
        return True
    parent = f.parents.get(call)
    if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
        return ast.unparse(parent.targets[0]) in holders
    scope = f.enclosing_scope(call)  # e.g. [Thread(...) for ...] then `for t in threads: t.daemon = True`
    return any(isinstance(n, ast.Attribute) and n.attr == "daemon" and isinstance(f.parents.get(n), ast.Assign)
               for n in walk_same_scope([scope]))


def joins_threads(f: ParsedFile) -> bool:
    """A ``t.join()`` / ``t.join(timeout)`` or ``coord.join(threads)`` anywhere in the file
    (``os.path.join(a, b)`` and ``", ".join(parts)`` do not count)."""
    for call in f.calls:
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr == "join") or isinstance(func.value, ast.Constant):
            continue
        receiver = (last_name(func.value) or "").lower()
        if "coord" in receiver or all(isinstance(arg, ast.Constant) for arg in call.args):
            return True
    return False


def find_enqueue_threads(f: ParsedFile) -> Iterator[Finding]:
    """Pattern 4 at each such ``Thread(...)``, and pitfall (b) when it is neither daemon nor joined."""
    holders = daemon_holders(f)
    joined = joins_threads(f)
    for call in enqueue_threads(f):
        target = source_text(thread_target(call))  # type: ignore[arg-type]
        yield f.finding(call, PATTERN, "pattern-thread-enqueue", (
            f"Python thread (target {target}) runs an enqueue op: a hand-made reader thread",
            "queuepipe.from_generator(the thread's data generator, output_types, output_shapes, batch_size=..., "
            "dynamic_pad=True): no placeholder, no enqueue op, no threads to manage"))
        if not thread_is_daemon(f, call, holders) and not joined:
            yield f.finding(call, PITFALL, "pitfall-thread-not-daemon", (
                f"enqueue thread (target {target}) is not daemon and never joined in this file: when training "
                "ends it stays blocked in enqueue on a full queue and the process does not exit",
                "daemon=True plus coord.request_stop(); coord.join(threads) -- or queuepipe, whose "
                "`with queuepipe.running(sess):` stops and joins its workers"))


# --------------------------------------------------------------------------------------
# Pitfall (a): num_epochs without local_variables_initializer
# --------------------------------------------------------------------------------------


def find_num_epochs_without_local_init(f: ParsedFile) -> Iterator[Finding]:
    if f.mentions(LOCAL_INITIALIZERS) or f.mentions(SESSIONS_INITIALISING_LOCALS):
        return
    for call in f.calls:
        name = f.library_call(call)
        if name not in PRODUCERS and name != "limit_epochs" and not f.is_train_batcher(call):
            continue
        epochs = keyword_value(call, "num_epochs")
        if epochs is not None and not is_constant(epochs, None):
            yield f.finding(call, PITFALL, "pitfall-num-epochs", (
                f"{source_text(call.func)}(num_epochs=...) counts epochs in a local variable, and this file never "
                "runs local_variables_initializer(): the queue runner fails on the uninitialized epochs variable "
                "and training stops at once (OutOfRangeError)",
                "sess.run(tf.local_variables_initializer()) before start_queue_runners -- or queuepipe's "
                "num_epochs=..., which has no variable to initialise"))


# --------------------------------------------------------------------------------------
# Pitfall (c): a py_func that returns one sample per call
# --------------------------------------------------------------------------------------


def py_func_function(call: ast.Call) -> Optional[ast.AST]:
    return call.args[0] if call.args else keyword_value(call, "func")


def per_sample_consumer(f: ParsedFile, py_func: ast.Call) -> Optional[str]:
    """What takes the py_func's outputs one sample at a time -- an ``enqueue`` (not
    ``enqueue_many``) or a ``tf.train.batch`` without ``enqueue_many=True`` -- if anything does."""
    parent = f.parents.get(py_func)
    parts = assignment_parts(parent) if parent is not None else None
    outputs = set().union(*(assigned_names(t) for t in parts[0])) if parts else set()
    scope = f.tree if any("." in name for name in outputs) else f.enclosing_scope(py_func)
    scope_nodes = list(walk_same_scope([scope]))
    assignments = sorted((n for n in scope_nodes if assignment_parts(n)), key=lambda n: n.lineno)
    outputs = taint_through_assignments(assignments, outputs)
    in_one_function = scope is not f.tree
    for call in sorted((n for n in scope_nodes if isinstance(n, ast.Call)), key=lambda n: n.lineno):
        if call is py_func or (in_one_function and call.lineno < py_func.lineno):
            continue
        direct = any(node is py_func for node in ast.walk(call))
        name = last_name(call.func)
        batcher = f.is_train_batcher(call)
        if not (direct or references(call) & outputs) or not (batcher or name in ("enqueue", "enqueue_many")):
            continue
        # the first consumer decides; slices of the outputs (x[a:b]) are batches cut from a block
        if not direct and sliced_references(call) & outputs:
            return None
        if name == "enqueue":
            return f"{source_text(call.func)}, not enqueue_many"
        if batcher and not is_constant(keyword_value(call, "enqueue_many"), True):
            return f"{source_text(call.func)} without enqueue_many=True"
        return None
    return None


def find_per_sample_py_funcs(f: ParsedFile) -> Iterator[Finding]:
    for call in f.calls:
        if f.library_call(call) not in PY_FUNCS:
            continue
        function = py_func_function(call)
        if function is None or not f.defined_functions(function):
            continue
        consumer = per_sample_consumer(f, call)
        if consumer:
            yield f.finding(call, PITFALL, "pitfall-py-func-per-sample", (
                f"{source_text(call.func)}({source_text(function, 40)}, ...) looks like it returns one sample per call "
                f"(heuristic: its outputs go to {consumer}): one Python call, GIL hand-off and enqueue per row",
                "return whole batches and enqueue_many=True -- or queuepipe.from_generator(...), which batches "
                "rows in numpy inside its workers"))


# --------------------------------------------------------------------------------------
# Pattern 1 and pitfall (d): feed_dict filled from a generator inside a loop that runs the session
# --------------------------------------------------------------------------------------


def directly_advances_iterator(call: ast.Call) -> bool:
    """``next(it)``, ``it.next()``, ``it.__next__()``, ``data.next_batch(n)``."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id == "next"
    if isinstance(func, ast.Attribute):
        return func.attr == "next_batch" or (func.attr in ("next", "__next__") and not call.args)
    return False


def advances_iterator(f: ParsedFile, node: ast.AST) -> bool:
    """Whether an expression takes the next item of an iterator: directly, or by calling a
    function of this file that does (``fill_feed_dict(data_set, ...)`` calling ``next_batch``)."""
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        if directly_advances_iterator(call):
            return True
        for function in f.defined_functions(call.func):
            if any(isinstance(n, ast.Call) and directly_advances_iterator(n) for n in ast.walk(function)):
                return True
    return False


def generator_variables(f: ParsedFile) -> Set[str]:
    """Names bound to a call of a generator function of this file, or to ``iter(...)``."""
    generators = {name for name, defs in f.functions.items()
                  if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for d in defs for n in walk_same_scope(d.body))}
    names: Set[str] = set()
    for node in f.nodes:
        parts = assignment_parts(node)
        if parts and isinstance(parts[1], ast.Call) and last_name(parts[1].func) in generators | {"iter"}:
            names |= set().union(*(assigned_names(t) for t in parts[0]))
    return names


def iterates_a_generator(node: ast.AST, generator_names: Set[str]) -> bool:
    """A for loop's iterable that yields data: a call (not ``range``, ``d.items()``...), or a
    variable bound to a generator of this file; ``enumerate``/``zip`` are looked through."""
    if isinstance(node, ast.Call):
        name = last_name(node.func)
        if name in ("enumerate", "zip", "tqdm"):
            return any(iterates_a_generator(arg, generator_names) for arg in node.args)
        return name not in NOT_GENERATORS
    return (dotted_name(node) or "") in generator_names


def feeding_session_runs(loop: ast.AST) -> Iterator[Tuple[ast.Call, ast.AST]]:
    """``(call, feed)`` for each ``x.run(fetches, feed_dict=feed)`` / ``t.eval(feed_dict=feed)`` in
    the loop, leaving out runs of an enqueue op (those are pattern 4, a reader thread)."""
    for node in walk_same_scope(loop.body + loop.orelse):  # type: ignore[attr-defined]
        if not (isinstance(node, ast.Call) and last_name(node.func) in ("run", "eval")):
            continue
        feed = keyword_value(node, "feed_dict")
        if feed is None and last_name(node.func) == "run" and len(node.args) >= 2:
            feed = node.args[1]
        if feed is not None and not is_enqueue_call(node):
            yield node, feed


def generator_sources(f: ParsedFile, loop: ast.AST, generator_names: Set[str]) -> Tuple[Set[str], List[ast.AST]]:
    """The names a loop binds from a generator, and the statements that bind them."""
    tainted: Set[str] = set()
    sources: List[ast.AST] = []
    if isinstance(loop, (ast.For, ast.AsyncFor)) and iterates_a_generator(loop.iter, generator_names):
        tainted |= assigned_names(loop.target)
        sources.append(loop)
    body = list(walk_same_scope(loop.body + loop.orelse))  # type: ignore[attr-defined]
    assignments = sorted((n for n in body if assignment_parts(n)), key=lambda n: n.lineno)
    for node in assignments:
        targets, value = assignment_parts(node)  # type: ignore[misc]
        if advances_iterator(f, value):
            tainted |= set().union(*(assigned_names(t) for t in targets))
            sources.append(node)
    return taint_through_assignments(assignments, tainted), sources


def describe_source(source: ast.AST) -> str:
    if isinstance(source, (ast.For, ast.AsyncFor)):
        return f"for ... in {source_text(source.iter)}"
    parts = assignment_parts(source)
    return source_text(parts[1]) if parts else source_text(source)


def find_feed_dict_loops(f: ParsedFile) -> Iterator[Finding]:
    generator_names = generator_variables(f)
    for loop in f.nodes:
        if not isinstance(loop, (ast.For, ast.AsyncFor, ast.While)):
            continue
        tainted, sources = generator_sources(f, loop, generator_names)
        fed_runs = [(run, feed) for run, feed in feeding_session_runs(loop)
                    if references(feed) & tainted or advances_iterator(f, feed)]
        if not fed_runs:
            continue
        for source in sources:
            yield f.finding(source, PATTERN, "pattern-feed-dict-generator", advise_feed_loop(describe_source(source)))
        for run, feed in fed_runs:
            if not sources:  # the feed itself takes the next item: feed_dict={x: next(gen)}
                yield f.finding(run, PATTERN, "pattern-feed-dict-generator",
                                advise_feed_loop(f"feed_dict={source_text(feed, 40)}"))
            yield f.finding(run, PITFALL, "pitfall-feed-dict-generator", (
                f"{source_text(run.func)}(..., feed_dict=...) takes its values from a generator inside the loop: "
                "every step waits for Python to make the batch and for feed_dict to copy it; the accelerator idles",
                "move the generator into queuepipe.from_generator(...) workers and run the step with no feed_dict"))


# --------------------------------------------------------------------------------------
# Notes: Python 2 leftovers and tf.contrib, counted per file
# --------------------------------------------------------------------------------------


def python2_leftovers(f: ParsedFile) -> List[Tuple[int, str]]:
    """(line, what) for each Python 2 leftover the ast shows."""
    bound = {n.id for n in f.nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= set(f.functions) | {a.arg for n in f.nodes if isinstance(n, ast.arguments)
                                 for a in n.args + n.posonlyargs + n.kwonlyargs}
    bound |= {alias.asname or alias.name for n in f.nodes if isinstance(n, ast.ImportFrom) for alias in n.names}
    found: List[Tuple[int, str]] = []
    for node in f.nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in PY2_BUILTINS - bound:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Call) and last_name(node.func) in PY2_METHODS and isinstance(node.func, ast.Attribute):
            found.append((node.lineno, f".{node.func.attr}()"))
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            if any(alias.name in PY2_FUTURES for alias in node.names):
                found.append((node.lineno, "from __future__"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PY2_MODULES:
            found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in PY2_MODULES]
    return found


def contrib_uses(f: ParsedFile) -> List[int]:
    """Line of each ``tf.contrib`` import and each outermost attribute chain that resolves into it."""
    lines: List[int] = []
    for node in f.nodes:
        if isinstance(node, ast.Import):
            lines += [node.lineno for a in node.names if a.name.startswith("tensorflow.contrib")]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            if module.startswith("tensorflow.contrib") or (module == "tensorflow" and
                                                           any(a.name == "contrib" for a in node.names)):
                lines.append(node.lineno)
        elif isinstance(node, (ast.Attribute, ast.Name)) and isinstance(node.ctx, ast.Load):
            parent = f.parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                continue  # not the outermost part of the chain
            resolved = f.qualified(node)
            if resolved and resolved.startswith("tensorflow.contrib"):
                lines.append(node.lineno)
    return sorted(lines)


def count_note(path: str, code: str, lines: Sequence[int], what: str, detail: str, replacement: str) -> Finding:
    count = len(lines)
    return Finding(path, min(lines), NOTE, code,
                   f"{count} {what}{'s' if count != 1 else ''}{detail} -- outside the input side "
                   f"(first at line {min(lines)})", replacement)


PY2_REPLACEMENT = "port to Python 3 (e.g. pyupgrade) -- not an input issue"
CONTRIB_REPLACEMENT = ("tf.contrib is gone in TF 2: tf_slim, tensorflow-addons or core APIs "
                       "(slim's prefetch_queue: queuepipe.compat.slim)")


def find_notes(f: ParsedFile) -> Iterator[Finding]:
    leftovers = python2_leftovers(f)
    if leftovers:
        kinds = sorted({what for _, what in leftovers})
        yield count_note(f.path, "note-python2", [line for line, _ in leftovers], "Python 2 leftover",
                         f" ({', '.join(kinds[:4])}{', ...' if len(kinds) > 4 else ''})", PY2_REPLACEMENT)
    contrib = contrib_uses(f)
    if contrib:
        yield count_note(f.path, "note-tf-contrib", contrib, "tf.contrib use", "", CONTRIB_REPLACEMENT)


RULES: Tuple[Callable[[ParsedFile], Iterator[Finding]], ...] = (
    find_feed_dict_loops, find_reader_pipelines, find_queue_pipelines, find_enqueue_threads, find_tftables,
    find_keras_inputs, find_slim_prefetch, find_num_epochs_without_local_init, find_per_sample_py_funcs, find_notes)

# --------------------------------------------------------------------------------------
# Files that do not parse: a line-by-line search for the pattern names
# --------------------------------------------------------------------------------------

READERS_RE = "|".join(sorted(READERS))
REGEX_RULES: Tuple[Tuple[str, "re.Pattern[str]", Callable[["re.Match[str]", Set[str]], Advice]], ...] = (
    ("pattern-producer", re.compile(r"((?:\w+\.)*(?<!\w)(%s))\s*\(" % "|".join(sorted(PRODUCERS))),
     lambda m, readers: advise_producer(m.group(1), readers)),
    ("pattern-reader", re.compile(r"((?:\w+\.)*(?<!\w)(%s))\s*\(" % READERS_RE),
     lambda m, readers: advise_reader(m.group(1), m.group(2))),
    ("pattern-batch", re.compile(r"((?:\w+\.)*(?<!\w)train\.(%s))\s*\(" % "|".join(sorted(BATCHERS))),
     lambda m, readers: advise_batch(m.group(1), m.group(2), readers)),
    ("pattern-queue", re.compile(r"((?:\w+\.)*(?<!\w)(%s))\s*\(" % "|".join(sorted(QUEUES))),
     lambda m, readers: advise_queue(m.group(1), m.group(2), False)),
    ("pattern-queue-runner", re.compile(r"((?:\w+\.)*(?<!\w)(QueueRunner|add_queue_runner))\s*\("),
     lambda m, readers: advise_queue_runner(m.group(1))),
    ("pattern-py-func", re.compile(r"((?:\w+\.)*(?<!\w)(py_func|numpy_function))\s*\("),
     lambda m, readers: advise_py_func(m.group(1))),
    ("pattern-tftables", re.compile(r"^\s*((?:import|from)\s+tftables\b.*)$"),
     lambda m, readers: advise_tftables_import(m.group(1).strip())),
    ("pattern-tftables", re.compile(r"((?:\w+\.)*(?:tftables\.open_file|get_fifoloader))\s*\("),
     lambda m, readers: advise_tftables_call(m.group(1))),
    ("pattern-keras", re.compile(r"((?:\w+\.)*(?<!\w)(HDF5Matrix|GeneratorEnqueuer|OrderedEnqueuer|"
                                 r"fit_generator|evaluate_generator|predict_generator))\s*\("),
     lambda m, readers: advise_keras(m.group(1), m.group(2))),
    ("pattern-slim-prefetch", re.compile(r"((?:\w+\.)*prefetch_queue\.prefetch_queue)\s*\("),
     lambda m, readers: advise_slim_prefetch(m.group(1))),
)
PY2_LINE_RES = (("print statement", re.compile(r"^\s*print(\s+[^\s(=.,)\]]|\s*$)")),
                ("exec statement", re.compile(r"^\s*exec\s+[\"'\w]")),
                ("except X, e", re.compile(r"except\s+[\w.]+\s*,\s*\w+\s*:")),
                ("raise X, msg", re.compile(r"^\s*raise\s+\w+\s*,")),
                ("Python 2 builtin", re.compile(r"\b(xrange|raw_input|unicode|basestring)\s*\(")),
                ("Python 2 dict method", re.compile(r"\.(iteritems|itervalues|iterkeys|has_key)\s*\(")),
                ("<>", re.compile(r"<>")))


def strip_comment(line: str) -> str:
    """``line`` without its ``# comment`` (quotes respected, one line at a time)."""
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:index]
    return line


def regex_findings(path: str, text: str) -> List[Finding]:
    """The pattern names of a file that does not parse, line by line (no data flow, no pitfalls)."""
    lines = [strip_comment(line) for line in text.splitlines()]
    readers = {m.group(2) for line in lines for m in re.finditer(r"(?<!\w)(\w+\.)*(%s)\s*\(" % READERS_RE, line)}
    feeds_a_queue = any(re.search(r"\b(%s|QueueRunner|add_queue_runner)\s*\(|\btrain\.(%s)\s*\("
                                  % ("|".join(QUEUES), "|".join(BATCHERS)), line) for line in lines)
    found: List[Finding] = []
    for number, line in enumerate(lines, 1):
        for code, pattern, advise in REGEX_RULES:
            if code == "pattern-py-func" and not feeds_a_queue:
                continue
            match = pattern.search(line)
            if match:
                message, replacement = advise(match, readers)
                found.append(Finding(path, number, PATTERN, code, message + " (regex fallback: file not parsed)",
                                     replacement))
    leftovers = [(number, label) for number, line in enumerate(lines, 1)
                 for label, regex in PY2_LINE_RES if regex.search(line)]
    if leftovers:
        labels = sorted({label for _, label in leftovers})
        found.append(count_note(path, "note-python2", [number for number, _ in leftovers], "Python 2 leftover",
                                f" ({', '.join(labels)})", PY2_REPLACEMENT))
    contrib = [number for number, line in enumerate(lines, 1) if re.search(r"\btf\.contrib\b|tensorflow\.contrib", line)]
    if contrib:
        found.append(count_note(path, "note-tf-contrib", contrib, "tf.contrib use", "", CONTRIB_REPLACEMENT))
    return found


# --------------------------------------------------------------------------------------
# Files and directories
# --------------------------------------------------------------------------------------


def python_files(path: str) -> List[str]:
    """``path`` itself when it is a file; else every ``*.py`` below it, sorted, leaving out hidden
    directories, ``__pycache__``, ``node_modules``, ``site-packages`` and virtual environments."""
    if os.path.isfile(path):
        return [path]
    found: List[str] = []
    for directory, subdirectories, files in os.walk(path):
        subdirectories[:] = sorted(d for d in subdirectories if not skipped_directory(os.path.join(directory, d)))
        found += [os.path.join(directory, name) for name in sorted(files) if name.endswith(".py")]
    return found


def skipped_directory(path: str) -> bool:
    name = os.path.basename(path)
    return (name.startswith(".") or name in SKIPPED_DIRECTORIES
            or os.path.exists(os.path.join(path, "pyvenv.cfg")) or os.path.islink(path))


def not_parsed_note(path: str, error: Exception) -> Finding:
    line = getattr(error, "lineno", None) or 1
    reason = getattr(error, "msg", None) or str(error)
    return Finding(path, line, NOTE, "note-not-parsed",
                   f"not parsed (Python 2?): {reason}; searched line by line for the pattern names instead "
                   "(pitfalls need a parse)", "port it to Python 3, then run queuepipe doctor on it again")


def scan_file(path: str) -> List[Finding]:
    """Findings of one file, sorted by line.  The file is read and parsed, never imported."""
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as error:
        return [Finding(path, 1, NOTE, "note-not-read", f"not read: {error.strerror or error}", "")]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings of the scanned code are not ours to print
            tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError, RecursionError) as error:
        text = source.decode("utf-8", errors="replace")
        findings = [not_parsed_note(path, error)] + regex_findings(path, text)
    else:
        parsed = ParsedFile(path, tree)
        findings = [finding for rule in RULES for finding in rule(parsed)]
    return sorted(first_per_line_and_code(findings), key=Finding.sort_key)


def first_per_line_and_code(findings: Iterable[Finding]) -> List[Finding]:
    """One finding per (line, code): ``add_queue_runner(QueueRunner(...))`` is one thing to change."""
    kept: Dict[Tuple[int, str], Finding] = {}
    for finding in findings:
        kept.setdefault((finding.line, finding.code), finding)
    return list(kept.values())


def scan(path: str) -> List[Finding]:
    """Every finding in ``path`` (a file, or a directory searched for ``*.py``), sorted by file and line."""
    return [finding for file in python_files(path) for finding in scan_file(file)]


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def kind_counts(findings: Sequence[Finding]) -> str:
    return ", ".join(plural(sum(f.kind == kind for f in findings), kind) for kind in (PATTERN, PITFALL, NOTE))


def print_report(files: Sequence[str], findings: Sequence[Finding], out: Optional[TextIO] = None) -> None:
    out = out or sys.stdout
    by_file: Dict[str, List[Finding]] = {}
    for finding in findings:
        by_file.setdefault(finding.path, []).append(finding)
    for path, in_file in by_file.items():
        print(f"{path}  ({kind_counts(in_file)})", file=out)
        for finding in in_file:
            print(f"  {finding.format()}", file=out)
        print(file=out)
    not_parsed = sum(f.code == "note-not-parsed" for f in findings)
    print(f"summary: {plural(len(files), 'file')} scanned, {len(by_file)} with findings, "
          f"{not_parsed} not parsed: {kind_counts(findings)}", file=out)
    if findings:
        print("(pattern: TF1 input code queuepipe replaces; pitfall: a classic TF1 input mistake; "
              "note: outside the input side. All rules are heuristics: check each line.)", file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``queuepipe doctor PATH...``: print the report; 0, or 1 with ``--strict`` when anything was
    found, or 2 when a PATH does not exist."""
    parser = argparse.ArgumentParser(
        prog="queuepipe doctor",
        description="List the TF1 input patterns of a codebase (read with Python's ast, never imported), "
                    "with their queuepipe replacement, and the classic pitfalls it can see.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a Python file or a directory to search")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when anything is found")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    missing = [path for path in args.paths if not os.path.exists(path)]
    if missing:
        print(f"queuepipe doctor: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    files = [file for path in args.paths for file in python_files(path)]
    findings = [finding for file in files for finding in scan_file(file)]
    print_report(files, findings)
    return 1 if args.strict and findings else 0


if __name__ == "__main__":
    sys.exit(main())
