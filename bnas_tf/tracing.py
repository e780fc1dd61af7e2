"""Stack traces of traced ops that keep only bnas_tf's frames (and the user's script).

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
traces each replica in a thread of its own, so the search enters it again in
each replica's function.
"""

import contextlib
import os
import sys

try:  # TensorFlow's own stack filters; if a release drops them, stacks stay whole.
    from tensorflow.python.util import tf_stack
except ImportError:  # pragma: no cover - depends on the TensorFlow release
    tf_stack = None

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


# TensorFlow drops the innermost frames of every recorded stack (its own op-creation
# calls: the capture, `_create_c_op` and its caller) after filtering; frames of these
# modules stay, so that the frames it drops are still its own.
_RECORDING_MODULES = ("tensorflow.python.util.tf_stack", "tensorflow.python.framework.ops")


def library_files():
    """Source files of the loaded modules outside bnas_tf, but for the main script and
    the modules that record the stacks."""
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and name != "__main__" and name not in _RECORDING_MODULES and not os.path.abspath(path).startswith(
                _PACKAGE):
            files.add(path)
    keep = {getattr(sys.modules.get(name), "__file__", None) for name in _RECORDING_MODULES + ("__main__",)}
    return files - keep


if tf_stack is not None:

    class _PackageFramesOnly(tf_stack.StackTraceFilter):
        def get_filtered_filenames(self):
            return library_files()


def package_frames_only():
    """A context manager: ops created in this thread record only bnas_tf's and the script's frames."""
    return _PackageFramesOnly() if tf_stack is not None else contextlib.nullcontext()
