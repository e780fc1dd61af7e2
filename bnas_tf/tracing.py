"""What traced graphs leave behind: their ops' stack traces, and their custom gradients.

Stack traces of traced ops keep only bnas_tf's frames (and the user's script).

TensorFlow records, for every op added to a graph, the Python stack that
created it, for its error messages, and freezes a copy into every function
built from the graph. A search step graph holds tens of thousands of ops, each
traced 60 to 100 frames deep inside Keras and TensorFlow: at the PC-DARTS
setting these copies held 370 MB at the peak of a search step (BUILD.md,
"Stack traces of traced ops"). Within `package_frames_only`, frames of every
loaded module outside bnas_tf are dropped as each op records its stack; an
error in a traced step still names the bnas_tf line and the user's script line
that built the op.

A filter applies to the thread that enters it: `tf.distribute.MirroredStrategy`
traces each replica in a thread of its own, so the search also runs each
replica's function under it (`with_package_frames`).

`release_gradients` unregisters the custom gradients of a graph the search no
longer needs: `tf.custom_gradient` (the STE quantizers, the amplitude
matrices) registers a new gradient function in TensorFlow's global registry at
every call in a graph and never removes it, and the function's closure holds
the graph's tensors, so every dropped step graph stayed alive.

`without_reference_scan` spares a step graph's first call a scan that
instantiates every called function once per call site: see its docstring.

`counted_apart` keeps TensorFlow's retracing warning for functions that really
retrace, and off the search's functions made one per structure by design.

`GraphFreeFunction` runs a `tf.function` from its definition in the runtime,
with the Python graph it was traced into freed: see its docstring.
"""

import contextlib
import functools
import gc
import os
import sys

import tensorflow as tf

try:  # TensorFlow's own stack filters; if a release drops them, stacks stay whole.
    from tensorflow.python.util import tf_stack
except ImportError:  # pragma: no cover - depends on the TensorFlow release
    tf_stack = None

try:  # the reference-variable op of TensorFlow 1; if a release drops it, graphs are scanned.
    from tensorflow.python.ops import gen_state_ops as _state_ops
except ImportError:  # pragma: no cover - depends on the TensorFlow release
    _state_ops = None

try:  # TensorFlow's gradient registry; if a release moves it, nothing is released.
    from tensorflow.python.framework import ops as _tf_ops

    _GRADIENTS = _tf_ops._gradient_registry._registry  # noqa: SLF001 - no public way to unregister
except (ImportError, AttributeError):  # pragma: no cover - depends on the TensorFlow release
    _GRADIENTS = None

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


# TensorFlow drops the innermost frames of every recorded stack (its own op-creation
# calls: the capture, `_create_c_op` and its caller) after filtering; frames of these
# modules stay, so that the frames it drops are still its own.
_RECORDING_MODULES = ("tensorflow.python.util.tf_stack", "tensorflow.python.framework.ops")


def library_files():
    """Source files of the loaded modules outside bnas_tf, but for the main script and
    the modules that record the stacks (by file: a module can be loaded under two names,
    as the main script is under ``__main__`` and ``__mp_main__``)."""
    files = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    keep = {getattr(sys.modules.get(name), "__file__", None) for name in _RECORDING_MODULES + ("__main__",)}
    return {f for f in files - keep if f and not os.path.abspath(f).startswith(_PACKAGE)}


if tf_stack is not None:

    class _PackageFramesOnly(tf_stack.StackTraceFilter):
        def get_filtered_filenames(self):
            return library_files()


def package_frames_only():
    """A context manager: ops created in this thread record only bnas_tf's and the script's frames."""
    return _PackageFramesOnly() if tf_stack is not None else contextlib.nullcontext()


def with_package_frames(fn):
    """`fn` run under `package_frames_only` in whichever thread calls it: for the functions
    a `tf.distribute` strategy runs, each replica in a thread of its own."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with package_frames_only():
            return fn(*args, **kwargs)

    return run


def _refers_to(value, graph, depth=0):
    """Whether a custom gradient's closure holds a tensor of `graph` (functions nest)."""
    try:
        if getattr(value, "graph", None) is graph:
            return True
    except Exception:  # noqa: BLE001 - an eager value has no graph, and may say so otherwise
        pass
    if depth > 3:
        return False
    if isinstance(value, (list, tuple)):
        return any(_refers_to(v, graph, depth + 1) for v in value)
    cells = getattr(value, "__closure__", None) or ()
    for cell in cells:
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if _refers_to(content, graph, depth + 1):
            return True
    return False


def release_gradients(graph):
    """Unregisters the custom gradients registered while `graph` was traced; returns how many.

    Only gradients whose functions hold `graph`'s tensors go: those of the
    functions it calls (traced into graphs of their own, and reused by later
    graphs) stay.
    """
    if _GRADIENTS is None:
        return 0
    names = [name for name, entry in list(_GRADIENTS.items())
             if name.startswith("CustomGradient-") and _refers_to(entry.get("type"), graph)]
    for name in names:
        _GRADIENTS.pop(name, None)
    return len(names)


# The shared name of the marker's (never initialized, never read) legacy variable.
_MARKER = "bnas_tf_reference_scan_marker"


def without_reference_scan(fn):
    """`fn` (a replica's step, traced) with its tensor arguments behind a control edge from
    a reference-typed op, so that the first call of its graph skips a scan of every callee.

    When TensorFlow first runs a function graph, XLA's `EncapsulateSubgraphsPass`
    (registered whether or not XLA is used) marks the nodes connected to a
    reference variable. For each call node that is not yet marked it
    instantiates the callee, at every call site, and scans its body; a search
    step calls the shared fused functions from hundreds of sites, so this cost
    the call sites times the callees' size at every new graph (BUILD.md). A node
    downstream of a node already marked is marked without the scan, and so is,
    in the pass's second sweep, every node upstream of a marked one. Here the
    arguments pass through `tf.identity` after a reference-typed op (a
    TensorFlow 1 `VariableV2`, never initialized and never read; only its
    control edge is used): every call in the step then lies downstream of it, or
    upstream of a node that does. The mark only tells XLA not to compile those
    nodes, and the search steps are not compiled.

    Not for TPUs, whose replicas are compiled (a reference variable cannot be);
    `fn` is returned unchanged where the op is unavailable.
    """
    if _state_ops is None:  # pragma: no cover - depends on the TensorFlow release
        return fn

    @functools.wraps(fn)
    def run(*args):
        if tf.executing_eagerly():  # nothing is scanned (functions run eagerly when debugging)
            return fn(*args)
        marker = _state_ops.variable_v2(shape=[], dtype=tf.float32, shared_name=_MARKER)
        with tf.control_dependencies([marker.op]):
            args = tf.nest.map_structure(tf.identity, args)
        return fn(*args)

    return run


def counted_apart(fn):
    """`fn` as a callable whose `tf.function` TensorFlow counts retraces for on its own.

    TensorFlow warns of "excessive retracing" when 5 of the last 10 eager calls
    traced, and counts together every `tf.function` made from one nested
    function's code, to catch one made anew in a loop. The search makes one per
    step graph (a round's alive set, a trial's path) and the fused supernet one
    per operation kind, each traced per structure by design: counted together
    they raised the warning at every eagerly scored trial and in searches with
    few steps an epoch. Wrapped in a partial (which has no code object of its
    own) each is counted alone, so a function that does retrace on every call
    still warns. The name is kept for the traced graph's function names.
    """
    wrapped = functools.partial(fn)
    wrapped.__name__ = fn.__name__
    return wrapped


def _signature(value):
    """What a `GraphFreeFunction` traces apart: a tensor's shape and dtype, an iterator's
    element spec (its graph takes the iterator's resource, whichever iterator it is),
    anything else by value, as `tf.function` does."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return ("tensor", tuple(value.shape), value.dtype.name)
    element_spec = getattr(value, "element_spec", None)
    if element_spec is not None:
        return ("iterator", type(value).__name__, repr(element_spec))
    return ("value", type(value).__name__, repr(value))


class _ByName:
    """One traced signature of a tf.function, called by name in the eager context.

    Keeps what a call needs: the runtime function (`AtomicFunction`: while it
    lives, its definition and its callees stay registered), the function type
    (to flatten the arguments and pack the outputs) and the captured inputs.
    """

    def __init__(self, concrete):
        atomic = concrete._inference_function  # noqa: SLF001
        self._atomic = atomic
        self._type = concrete.function_type
        self._pack = atomic.function_type.pack_output
        self._outputs = len(atomic.function_type.flat_outputs)
        self._captures = list(concrete._captured_inputs)  # noqa: SLF001  (values, or callables read per call)
        self._context = atomic._bound_context  # noqa: SLF001  (the eager context it is registered in)
        atomic._cached_graph = None  # noqa: SLF001  (the callees keep theirs: later graphs call them)

    def __call__(self, *args):
        inputs = list(self._type.unpack_inputs(self._type.bind(*args)))
        captures = tf.nest.flatten([c() if callable(c) else c for c in self._captures], expand_composites=True)
        return self._pack(self._context.call_function(self._atomic.name, inputs + captures, self._outputs))


class GraphFreeFunction:
    """A `tf.function` called eagerly without keeping the graphs it traces.

    TensorFlow runs a traced function from its definition in the eager
    context; its Python `FuncGraph` (with the C graph under it) serves only
    to trace, and to differentiate or call it inside another graph, which the
    search never does with a step. Yet the tf.function's cache keeps it: at
    the PC-DARTS setting the search step's outer graph, 20.9k ops, held about
    200 MB through the step's peak (BUILD.md, "The step's graph freed once
    traced"). Here each new signature (`_signature`) is traced once through
    `fn.get_concrete_function`, its custom gradients are released
    (`release_gradients`), the tf.function forgets it, and the step runs by
    name (`_ByName`). The functions it calls keep their graphs: later graphs
    call them too.

    Eager calls only. Where TensorFlow's internals differ from what this
    expects, calls go to `fn` itself, graphs kept.
    """

    def __init__(self, fn):
        self.function = fn
        self._calls = {}
        self._traced = 0

    def experimental_get_tracing_count(self):
        """Signatures traced here, and any graph traced through the tf.function itself."""
        return self._traced + self.function.experimental_get_tracing_count()

    def get_concrete_function(self, *args):
        """The tf.function's, traced and kept (to inspect the graph)."""
        return self.function.get_concrete_function(*args)

    def _list_all_concrete_functions(self):
        return self.function._list_all_concrete_functions()  # noqa: SLF001

    def __call__(self, *args):
        key = tuple(_signature(a) for a in args)
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = self._trace(args)
        return call(*args)

    def _trace(self, args):
        concrete = self.function.get_concrete_function(*args)
        try:
            call = _ByName(concrete)
        except AttributeError:  # another TensorFlow: keep tf.function's own call
            return self.function
        self._traced += 1
        release_gradients(concrete.graph)
        cache = getattr(self.function, "_function_cache", None)
        if cache is not None:
            cache.clear()
        if getattr(self.function, "_concrete_variable_creation_fn", None) is not None:
            self.function._concrete_variable_creation_fn = None  # noqa: SLF001
        del concrete
        gc.collect()  # the graph is all reference cycles: freed now, before the first call peaks
        return call
