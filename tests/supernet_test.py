"""Supernet: shapes, masks, single path, derivation, and the cost of abandoned ops."""

import numpy as np
import pytest
import tensorflow as tf

from bnas_tf import genotypes as gt
from bnas_tf.errors import ConfigError
from bnas_tf.search import fused
from bnas_tf.search import supernet as sn


def _net(**kwargs):
    options = dict(init_channels=4, num_layers=3, reduction_cells=(1,), partial_channels=2, binarization="none")
    options.update(kwargs)
    return sn.Supernet(10, (16, 16, 3), **options)


@pytest.fixture(scope="module")
def net():
    return _net()


def _x(n=4):
    return np.random.RandomState(0).randn(n, 16, 16, 3).astype("float32")


# Each binarization and each activation kind at least once (shapes do not depend on the pairing).
@pytest.mark.parametrize("binarization, binary_activations",
                         [("none", False), ("xnor", True), ("pcnn", False), ("pcnn", True)])
def test_cell_shapes_every_binarization(binarization, binary_activations):
    model = _net(num_layers=2, reduction_cells=(1,), binarization=binarization,
                 binary_activations=binary_activations)
    x = tf.constant(_x(2))
    stem = model.stem_bn(model.stem_conv(x))
    assert stem.shape == (2, 16, 16, 12)
    edge_w = model.edge_weights("normal")
    normal, _ = model.cells[0](stem, stem, edge_w, op_weights=model.op_weights("normal"), alive=model.alive["normal"])
    assert normal.shape == (2, 16, 16, 4 * 4)  # 4 nodes x C
    reduce, _ = model.cells[1](stem, normal, model.edge_weights("reduce"), op_weights=model.op_weights("reduce"),
                               alive=model.alive["reduce"])
    assert reduce.shape == (2, 8, 8, 4 * 8)  # halved resolution, doubled C
    assert model(x, training=True).shape == (2, 10)
    choice = model.choice({t: ["sep_conv_3x3"] * 14 for t in gt.CELL_TYPES})
    assert model(x, training=True, choice=choice).shape == (2, 10)
    if binarization == "pcnn":
        assert model.losses  # the amplitude loss joins the model's losses


def test_channel_shuffle_matches_pcdarts():
    # PC-DARTS (NCHW): view(b, g, C/g, h, w).transpose(1, 2).flatten -> channel order.
    x = np.arange(8, dtype="float32").reshape(1, 1, 1, 8)
    out = sn.channel_shuffle(tf.constant(x), 2).numpy().ravel()
    np.testing.assert_array_equal(out, [0, 4, 1, 5, 2, 6, 3, 7])


def test_op_weights_softmax_over_alive_only(net):
    alive = {t: [list(gt.PRIMITIVES)] * 14 for t in gt.CELL_TYPES}
    alive["normal"] = [["sep_conv_3x3", "max_pool_3x3"]] * 14
    net.set_alive(alive)
    try:
        w = net.op_weights("normal").numpy()
        a = net.alpha_normal.numpy()
        i, j = gt.PRIMITIVES.index("max_pool_3x3"), gt.PRIMITIVES.index("sep_conv_3x3")
        expected = np.exp(a[:, [i, j]]) / np.exp(a[:, [i, j]]).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(w[:, [i, j]], expected, rtol=1e-5)
        others = [k for k in range(8) if k not in (i, j)]
        assert np.all(w[:, others] == 0)
        assert net.alive["normal"][0] == (i, j)
    finally:
        net.set_alive({t: [list(gt.PRIMITIVES)] * 14 for t in gt.CELL_TYPES})


def test_edge_weights_are_softmax_per_node(net):
    w = net.edge_weights("reduce").numpy()
    b = net.beta_reduce.numpy()
    offset = 0
    for node in range(4):
        n = node + 2
        e = np.exp(b[offset:offset + n])
        np.testing.assert_allclose(w[offset:offset + n], e / e.sum(), rtol=1e-6)
        offset += n


def _count_traced_ops(monkeypatch):
    """Counts the operations placed in a traced graph, one per edge that runs it
    (static graphs: each runs once per step), per-edge layers or fused."""
    calls = []
    original = sn.MixedEdge._apply
    original_fused = fused.FusedOps.call

    def counting(self, index, x, training):
        if self.primitives[index] != "none":
            calls.append(self.primitives[index])
        return original(self, index, x, training)

    def counting_fused(self, key, ops_, x, training):
        calls.extend([key[0]] * len(ops_))
        return original_fused(self, key, ops_, x, training)

    monkeypatch.setattr(sn.MixedEdge, "_apply", counting)
    monkeypatch.setattr(fused.FusedOps, "call", counting_fused)
    return calls


def _graph_calls(concrete):
    """Calls of shared operation functions in a traced step graph."""
    return sum(op.type in ("PartitionedCall", "StatefulPartitionedCall") for op in concrete.graph.get_operations())


def test_abandoned_operations_are_not_in_the_graph(monkeypatch):
    model = _net()
    calls = _count_traced_ops(monkeypatch)
    x = tf.constant(_x(2))
    full = tf.function(lambda x: model(x, training=True)).get_concrete_function(x)
    edges = 3 * 14
    assert len(calls) == edges * 7  # every op but `none`
    left = {t: [["sep_conv_3x3", "skip_connect", "none"]] * 14 for t in gt.CELL_TYPES}
    model.set_alive(left)
    del calls[:]
    reduced = tf.function(lambda x: model(x, training=True)).get_concrete_function(x)
    assert sorted(set(calls)) == ["sep_conv_3x3", "skip_connect"]
    assert len(calls) == edges * 2
    assert _graph_calls(reduced) < _graph_calls(full) / 2


def test_single_path_runs_one_operation_per_edge(monkeypatch):
    model = _net()
    calls = _count_traced_ops(monkeypatch)
    x = tf.constant(_x(2))
    rng = np.random.RandomState(1)
    names = {t: [gt.PRIMITIVES[i] for i in rng.randint(1, 8, size=14)] for t in gt.CELL_TYPES}
    choice = model.choice(names)
    tf.function(lambda x: model(x, training=True, choice=choice)).get_concrete_function(x)
    assert len(calls) == 3 * 14
    expected = [names["reduce" if c == 1 else "normal"][e] for c in (0, 1, 0) for e in range(14)]
    assert sorted(calls) == sorted(expected)


def _fastest_step_seconds(fns, x, repeats=7):
    """The fastest of `repeats` timed calls of each function, the calls interleaved.

    The minimum, not the median: another process on the same cores (a second test
    worker) only ever adds time, and interleaving spreads what it adds over all the
    functions alike."""
    for fn in fns:
        fn(x)  # trace and warm up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = tf.timestamp()
            fn(x)
            best[i] = min(best[i], float(tf.timestamp() - start))
    return best


def test_single_path_and_reduced_steps_are_cheaper():
    model = _net(init_channels=8)
    x = tf.constant(np.random.RandomState(0).randn(32, 16, 16, 3).astype("float32"))

    def step(choice=None):
        @tf.function
        def fn(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x, training=True, choice=choice))
            return tape.gradient(loss, model.weight_variables)

        return fn

    rng = np.random.RandomState(3)
    names = {t: [gt.PRIMITIVES[i] for i in rng.randint(1, 8, size=14)] for t in gt.CELL_TYPES}
    supernet, single = step(), step(model.choice(names))
    supernet_s, single_s = _fastest_step_seconds([supernet, single], x)
    model.set_alive({t: [["sep_conv_3x3", "max_pool_3x3"]] * 14 for t in gt.CELL_TYPES})
    reduced_s, supernet_s2 = _fastest_step_seconds([step(), supernet], x)  # `supernet` keeps its 8 ops
    supernet_s = min(supernet_s, supernet_s2)
    assert single_s < 0.5 * supernet_s, (single_s, supernet_s)
    assert reduced_s < 0.75 * supernet_s, (reduced_s, supernet_s)


def test_single_path_equals_supernet_with_one_alive_op():
    # A supernet whose edges each keep one op computes what the sampled path computes.
    model = _net(binarization="xnor")
    rng = np.random.RandomState(2)
    names = {t: [gt.PRIMITIVES[i] for i in rng.randint(1, 8, size=14)] for t in gt.CELL_TYPES}
    x = tf.constant(_x(2))
    single = model(x, training=False, choice=model.choice(names))
    model.set_alive({t: [[n] for n in names[t]] for t in gt.CELL_TYPES})
    mixed = model(x, training=False)
    np.testing.assert_allclose(single.numpy(), mixed.numpy(), rtol=1e-5, atol=1e-5)


def test_genotype_follows_weights():
    model = _net()
    alpha = np.full((14, 8), -5.0, dtype="float32")
    alpha[:, gt.PRIMITIVES.index("none")] = 10.0  # never chosen
    alpha[:, gt.PRIMITIVES.index("dil_conv_3x3")] = 1.0
    model.alpha_normal.assign(alpha)
    model.alpha_reduce.assign(alpha)
    beta = np.zeros(14, dtype="float32")
    beta[[0, 1, 2, 4, 5, 8, 9, 13]] = 3.0  # node 2: 0,1; node 3: 0,2; node 4: 0,3? -> edges 5 (src 0), 8 (src 3)
    model.beta_normal.assign(beta)
    model.beta_reduce.assign(beta)
    g = model.genotype()
    assert all(op == "dil_conv_3x3" for op, _ in g.normal)
    assert sorted(src for _, src in g.normal[0:2]) == [0, 1]
    assert sorted(src for _, src in g.normal[2:4]) == [0, 2]
    assert sorted(src for _, src in g.normal[4:6]) == [0, 3]
    assert sorted(src for _, src in g.normal[6:8]) == [0, 4]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="partial_channels"):
        _net(init_channels=6, partial_channels=4)
    with pytest.raises(ConfigError, match="reduction_cells"):
        _net(reduction_cells=(7,))
    model = _net(num_layers=1, reduction_cells=())
    with pytest.raises(ConfigError, match="needs an operation"):
        model.set_alive({t: [[]] * 14 for t in gt.CELL_TYPES})


def test_sampled_paths_call_each_edge_on_its_own():
    # The edges of a sampled path that leave one node with the same operation are not fused:
    # grouped, every new sample's member sets would trace (and build, and instantiate) new
    # functions. Each traced function of a sampled path takes one edge's variables.
    model = _net()
    x = tf.constant(_x(2))
    names = {t: ["sep_conv_3x3"] * 14 for t in gt.CELL_TYPES}  # every edge of a node alike
    tf.function(lambda x: model(x, training=True, choice=model.choice(names))).get_concrete_function(x)
    members = [len(slot) for fn in model._fused_ops._fns.values()  # noqa: SLF001
               for concrete in fn._list_all_concrete_functions()  # noqa: SLF001
               for slot in concrete.structured_input_signature[0][1]]
    assert members and set(members) == {1}


def test_imagenet_search_network_reaches_the_cells_at_28_pixels():
    # PC-DARTS's model_search_imagenet.py: stem0 224 -> 112 -> 56 (3C/2 then 3C channels),
    # stem1 56 -> 28 (3C); the first cell reduces s0 (56) as after a reduction cell.
    model = sn.Supernet(10, (224, 224, 3), init_channels=4, num_layers=1, reduction_cells=(),
                        partial_channels=2, binarization="none", imagenet=True)
    x = tf.constant(np.random.RandomState(0).randn(2, 224, 224, 3).astype("float32"))
    s0, s1 = model.stem(x)
    assert s0.shape == (2, 56, 56, 12) and s1.shape == (2, 28, 28, 12)
    assert [w.shape for w in model.stem0[0].weights] == [(3, 3, 3, 6)]
    assert isinstance(model.cells[0].preprocess0, sn.layers.FactorizedReduce)
    out, _ = model.cells[0](s0, s1, model.edge_weights("normal"), op_weights=model.op_weights("normal"),
                            alive=model.alive["normal"])
    assert out.shape == (2, 28, 28, 4 * 4)  # the first (normal) cell runs at 28 x 28
    assert model(x).shape == (2, 10)
    with pytest.raises(ConfigError, match="init_channels"):
        sn.Supernet(10, (224, 224, 3), init_channels=3, num_layers=3, reduction_cells=(1,), imagenet=True)
