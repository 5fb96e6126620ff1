"""Graph passes of compress/quant/qdq.py on hand-made graphs."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from yolocompress.compress.quant.qdq import unshare_conv_initializers
from yolocompress.export.ort import create_session


def test_convs_sharing_a_bias_get_their_own_copies(tmp_path):
    """The exporter deduplicates equal tensors, so two convs can read one bias; the pass gives each conv its
    own weight and bias initializers (other readers keep the original) and leaves the outputs unchanged."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    shape = [1, 4, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y1"], name="conv1"),
         helper.make_node("Conv", ["y1", "w", "b"], ["y2"], name="conv2"),
         helper.make_node("Conv", ["y2", "w2"], ["y3"], name="conv3"),
         helper.make_node("Add", ["y3", "b4"], ["out"], name="add")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"),
         numpy_helper.from_array(weight * 2, "w2"), numpy_helper.from_array(bias.reshape(1, 4, 1, 1), "b4")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.standard_normal(shape).astype(np.float32)
    before = create_session(path).run(None, {"x": x})[0]

    proto = onnx.load(str(path))
    assert unshare_conv_initializers(proto)
    inputs = {n.name: list(n.input) for n in proto.graph.node}
    assert inputs["conv1"][1:] != inputs["conv2"][1:]
    assert len({*inputs["conv1"][1:], *inputs["conv2"][1:]}) == 4  # two weights and two biases
    assert inputs["conv3"] == ["y2", "w2"] and inputs["add"] == ["y3", "b4"]  # used once: left alone
    assert not unshare_conv_initializers(proto)  # nothing shared any more
    onnx.save(proto, str(path))
    np.testing.assert_array_equal(create_session(path).run(None, {"x": x})[0], before)
