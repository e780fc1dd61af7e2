"""Traced ops record only bnas_tf's frames (and the script's) under `tracing.package_frames_only`.

The reference is TensorFlow's own record of the same op traced without the
filter: its frames run through TensorFlow's dispatch and op-definition
modules. Under the filter those must be gone, while the bnas_tf line that
built the op, the innermost frame an error should point at, stays (TensorFlow
drops a fixed number of innermost frames after filtering, so a filter that
also hid its own op-creation frames would drop bnas_tf's instead).
"""

import os

import tensorflow as tf

from bnas_tf import layers
from bnas_tf import tracing
from bnas_tf.search.pcdarts import search_graph_options

LAYERS_FILE = os.path.abspath(layers.__file__)
TF_DIR = os.path.dirname(os.path.abspath(tf.__file__))


def _pad_frames():
    """The frames recorded for the Pad op of `layers.shift_pixels`, traced now."""
    fn = tf.function(layers.shift_pixels, autograph=False)
    graph = fn.get_concrete_function(tf.TensorSpec([1, 4, 4, 2])).graph
    pad = next(op for op in graph.get_operations() if op.type == "Pad")
    return [(os.path.abspath(frame.filename), frame.lineno) for frame in pad.traceback]


def _tf_frames(frames):
    return [f for f, _ in frames if f.startswith(TF_DIR + os.sep) and not f.endswith(os.path.join("framework", "ops.py"))]


def test_only_package_frames_are_recorded_and_the_creating_line_stays():
    whole = _pad_frames()
    assert _tf_frames(whole), "without the filter TensorFlow records its own frames"
    creating_line = [line for f, line in whole if f == LAYERS_FILE][-1]
    with tracing.package_frames_only():
        kept = _pad_frames()
    assert not _tf_frames(kept)
    assert len(kept) < len(whole) // 2
    ours = [line for f, line in kept if f == LAYERS_FILE]
    assert ours and ours[-1] == creating_line
    # Everything after bnas_tf's line is TensorFlow's op-creation module only.
    last = max(i for i, (f, _) in enumerate(kept) if f == LAYERS_FILE)
    assert all(f.endswith(os.path.join("framework", "ops.py")) for f, _ in kept[last + 1:])


def test_search_graph_options_filter_and_restore():
    with search_graph_options():
        assert not _tf_frames(_pad_frames())
        assert tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer")
    assert _tf_frames(_pad_frames())


def test_library_files_spare_the_package_and_the_recording_modules():
    files = {os.path.abspath(f) for f in tracing.library_files()}
    assert LAYERS_FILE not in files
    assert os.path.abspath(tf.__file__) in files
    from tensorflow.python.framework import ops as tf_ops

    assert os.path.abspath(tf_ops.__file__) not in files


def test_release_gradients_frees_a_graph_with_custom_gradients():
    import gc
    import weakref

    import tensorflow as tf

    from bnas_tf import quantizers

    def build():
        fn = tf.function(lambda x: tf.reduce_sum(quantizers.ste_sign(x) * x))
        return fn.get_concrete_function(tf.TensorSpec([3], tf.float32))

    kept = build()  # another graph: its gradients must stay
    concrete = build()
    graph = weakref.ref(concrete.graph)
    assert tracing.release_gradients(concrete.graph) == 1
    assert tracing.release_gradients(concrete.graph) == 0
    del concrete
    gc.collect()
    assert graph() is None
    with tf.GradientTape() as tape:  # the other graph still differentiates through its STE
        x = tf.constant([0.5, -2.0, 0.25])
        tape.watch(x)
        y = kept(x)
    assert tape.gradient(y, x).numpy().tolist() == [1.5, -1.0, 1.25]
