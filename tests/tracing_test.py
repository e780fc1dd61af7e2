"""Traced ops record only bnas_tf's frames (and the script's) under `tracing.package_frames_only`.

The reference is TensorFlow's own record of the same op traced without the
filter: its frames run through TensorFlow's dispatch and op-definition
modules. Under the filter those must be gone, while the bnas_tf line that
built the op, the innermost frame an error should point at, stays (TensorFlow
drops a fixed number of innermost frames after filtering, so a filter that
also hid its own op-creation frames would drop bnas_tf's instead).
"""

import os

import numpy as np
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


# A function with CALLS call sites of one shared, not inlined function; `marked` wraps the
# outer function's body in `tracing.without_reference_scan`. Run in a fresh process with
# TensorFlow's log of the reference-variable scan on.
_SCAN_SCRIPT = r"""
import sys
import tensorflow as tf
from bnas_tf import tracing

CALLS = 12
marked = sys.argv[1] == "1"

@tf.function(autograph=False, experimental_attributes={"_noinline": True})
def inner(x):
    return tf.sin(x) * 2.0

def body(x):
    return tf.add_n([inner(x + float(i)) for i in range(CALLS)])

outer = tf.function(tracing.without_reference_scan(body) if marked else body, autograph=False)
x = tf.constant([0.5, 1.0])
print("RESULT", outer(x).numpy().tolist(), flush=True)
"""


def _scan_log(marked, tmp_path):
    import re
    import subprocess
    import sys

    script = tmp_path / "scan.py"
    script.write_text(_SCAN_SCRIPT)
    env = dict(os.environ, TF_CPP_VMODULE="xla_cluster_util=1", TF_CPP_MIN_LOG_LEVEL="0")
    out = subprocess.run([sys.executable, str(script), "1" if marked else "0"], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    found = [int(n) for n in re.findall(r"GetNodesRelatedToRefVariables\(\) found (\d+) nodes", out.stderr)]
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    return found, result


def test_without_reference_scan_marks_every_call_site_for_tensorflow(tmp_path):
    # TensorFlow's own log of its pass: unmarked, no node is connected to a reference variable,
    # so the pass instantiated the callee at each of the 12 call sites to look inside; marked,
    # the outer graph's nodes (its 12 calls among them) are found without looking.
    found, result = _scan_log(False, tmp_path)
    marked_found, marked_result = _scan_log(True, tmp_path)
    assert found and max(found) == 0
    assert max(marked_found) >= 12
    assert marked_result == result  # the same values


def test_without_reference_scan_keeps_values_and_gradients():
    def body(x, y):
        return tf.reduce_sum(tf.sin(x) * y)

    def grads(fn):
        x, y = tf.constant([0.3, -1.2]), tf.constant([2.0, 0.5])
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            value = tf.function(fn, autograph=False)(x, y)
        return [value.numpy()] + [g.numpy() for g in tape.gradient(value, [x, y])]

    for a, b in zip(grads(body), grads(tracing.without_reference_scan(body))):
        np.testing.assert_array_equal(a, b)
    # Functions run eagerly (when debugging), where TensorFlow 1's reference op cannot run.
    tf.config.run_functions_eagerly(True)
    try:
        for a, b in zip(grads(body), grads(tracing.without_reference_scan(body))):
            np.testing.assert_array_equal(a, b)
    finally:
        tf.config.run_functions_eagerly(False)


def _retracing_warnings(run):
    from tf_log_util import tensorflow_log

    return [m for m in tensorflow_log(run) if "triggered tf.function retracing" in m]


def test_counted_apart_counts_each_function_alone_and_keeps_real_retracing_warned():
    def make(scale, wrap):
        def scaled(x, offset):
            return x * scale + offset

        return tf.function(tracing.counted_apart(scaled) if wrap else scaled, autograph=False)

    x = tf.constant(1.0)

    def one_per_structure(wrap):
        fns = [make(float(i), wrap) for i in range(8)]
        return lambda: [fn(x, 0) for fn in fns]  # each made once and traced once, as the search's

    # Made from one nested function, TensorFlow counts them together (and warns) unless apart.
    assert _retracing_warnings(one_per_structure(False))
    assert _retracing_warnings(one_per_structure(True)) == []
    retracing = make(2.0, True)
    assert _retracing_warnings(lambda: [retracing(x, i) for i in range(8)])  # a new Python value each call
    assert retracing.get_concrete_function(x, 0).name.decode().startswith("__inference_scaled_")


def _graph_free_case():
    """A step with captured variables, a custom gradient, a nested call, structured outputs."""
    w = tf.Variable([[1.0, 2.0], [3.0, -1.0]])
    count = tf.Variable(0)

    @tf.custom_gradient
    def ste(x):
        return tf.sign(x), lambda dy: dy

    inner = tf.function(lambda x: tf.matmul(x, w), autograph=False)

    def step(x, scale):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(ste(inner(x)) * inner(x)) * scale
        w.assign_sub(0.1 * tape.gradient(loss, w))
        count.assign_add(1)
        return {"loss": loss, "pair": (count.read_value(), tf.shape(x)[0])}

    return step, w


def test_graph_free_function_matches_tf_function_and_frees_each_graph(monkeypatch):
    import gc
    import weakref

    traced = []
    release = tracing.release_gradients
    monkeypatch.setattr(tracing, "release_gradients", lambda g: (traced.append(weakref.ref(g)), release(g))[1])
    step, w = _graph_free_case()
    plain_step, plain_w = _graph_free_case()
    free = tracing.GraphFreeFunction(tf.function(step, autograph=False))
    plain = tf.function(plain_step, autograph=False)
    batches = [np.ones((3, 2), np.float32), np.full((3, 2), -0.5, np.float32), np.ones((5, 2), np.float32)]
    for x in batches:
        got, want = free(tf.constant(x), tf.constant(2.0)), plain(tf.constant(x), tf.constant(2.0))
        assert float(got["loss"]) == float(want["loss"])
        assert [int(v) for v in got["pair"]] == [int(v) for v in want["pair"]]
        np.testing.assert_array_equal(w.numpy(), plain_w.numpy())
    # One trace per shape, each graph freed once traced (the tf.function keeps none).
    gc.collect()
    assert free.experimental_get_tracing_count() == 2 and len(traced) == 2
    assert [r() is None for r in traced] == [True, True]
    assert not free.function._list_all_concrete_functions()


def test_graph_free_function_takes_a_new_iterator_without_retracing():
    total = tf.Variable(0.0)

    def step(iterator):
        total.assign_add(tf.reduce_sum(next(iterator)))
        return total.read_value()

    free = tracing.GraphFreeFunction(tf.function(step, autograph=False))
    dataset = tf.data.Dataset.range(6).map(lambda i: tf.cast(i, tf.float32)).batch(2)
    assert float(free(iter(dataset))) == 1.0
    assert float(free(iter(dataset))) == 2.0  # a fresh iterator: its first batch again
    it = iter(dataset)
    assert [float(free(it)) for _ in range(3)] == [3.0, 8.0, 17.0]
    assert free.experimental_get_tracing_count() == 1
