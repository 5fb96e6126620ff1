import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from yolocompress.compress.quant.verify import optimized_graph
from yolocompress.errors import InputError
from yolocompress.export.ort import create_session
from yolocompress.export.onnx import export_onnx, read_onnx_metadata, verify_onnx
from yolocompress.models import build_model

IMGSZ = 96
# Ops that would mean shape arithmetic or grid construction was left in the graph.
NOT_WANTED = {"Gather", "Range", "Where", "ConstantOfShape", "Identity", "Constant", "Cast"}


@pytest.fixture(scope="module")
def model():
    net = build_model("yolov5n", nc=3)
    net.names = ["circle", "rectangle", "triangle"]
    return net


@pytest.fixture(scope="module")
def static_onnx(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "n.onnx", imgsz=IMGSZ)


def _dims(value_info) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in shape.dim]


def test_static_export_is_a_clean_checked_graph(static_onnx, tmp_path):
    proto = onnx.load(str(static_onnx))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["output0"]
    assert _dims(proto.graph.input[0]) == [1, 3, IMGSZ, IMGSZ]
    n_anchors = 3 * sum((IMGSZ // s) ** 2 for s in (8, 16, 32))
    assert _dims(proto.graph.output[0]) == [1, n_anchors, 8]
    ops = [n.op_type for n in proto.graph.node]
    # one Shape -> Expand per level: the anchor sizes expanded to the box shape (Detect._grids), which ONNX
    # Runtime folds into a constant when it loads the model
    assert ops.count("Shape") == ops.count("Expand") == 3
    assert not set(ops) & NOT_WANTED, set(ops) & NOT_WANTED
    assert "BatchNormalization" not in ops  # folded into the convolutions
    session_ops = {n.op_type for n in optimized_graph(static_onnx, tmp_path / "opt.onnx").graph.node}
    assert not session_ops & {"Shape", "Expand"}  # folded


def test_parity_with_pytorch(model, static_onnx):
    assert verify_onnx(model, static_onnx, IMGSZ) < 1e-3


def test_metadata(static_onnx):
    meta = read_onnx_metadata(static_onnx)
    assert meta.names == ["circle", "rectangle", "triangle"]
    assert meta.stride == 32 and meta.imgsz == (IMGSZ, IMGSZ) and meta.batch == 1


def test_dynamic_batch(model, tmp_path):
    path = export_onnx(model, tmp_path / "dyn.onnx", imgsz=64, dynamic=True)
    proto = onnx.load(str(path))
    assert _dims(proto.graph.input[0]) == ["batch", 3, 64, 64]
    ops = [n.op_type for n in proto.graph.node]
    assert not set(ops) & {"Range", "ConstantOfShape"} and ops.count("Expand") == 3  # grids folded
    out = create_session(path).run(None, {"images": np.random.rand(2, 3, 64, 64).astype(np.float32)})[0]
    assert out.shape == (2, 3 * (64 + 16 + 4), 8)
    assert verify_onnx(model, path, 64, batch=2) < 1e-3
    assert read_onnx_metadata(path).batch is None


def test_model_is_left_untouched_and_fp16_is_exported_as_fp32(tmp_path):
    net = build_model("yolov5n").half().train()
    path = export_onnx(net, tmp_path / "h.onnx", imgsz=64)
    assert net.training and next(net.parameters()).dtype == torch.float16
    assert create_session(path).get_inputs()[0].type == "tensor(float)"


class _NotADetector(nn.Module):
    def forward(self, x):
        return x.mean()


def test_failed_export_leaves_nothing(tmp_path):
    with pytest.raises(InputError):
        export_onnx(_NotADetector(), tmp_path / "bad.onnx", imgsz=64)
    assert list(tmp_path.iterdir()) == []


def test_reads_ultralytics_style_metadata(tmp_path):
    def tensor(name):
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 3, 32, 32])

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g",
                              [tensor("images")], [tensor("output0")])
    proto = helper.make_model(graph)
    # Ultralytics writes Python reprs, not JSON
    helper.set_model_props(proto, {"stride": "32", "names": str({0: "person", 1: "bicycle"}),
                                   "imgsz": "[640, 640]"})
    onnx.save(proto, str(tmp_path / "u.onnx"))
    meta = read_onnx_metadata(tmp_path / "u.onnx")
    assert meta.names == ["person", "bicycle"] and meta.stride == 32 and meta.imgsz == (640, 640)


def test_metadata_of_a_non_onnx_file(tmp_path):
    (tmp_path / "x.onnx").write_text(json.dumps({"not": "onnx"}))
    with pytest.raises(InputError):
        read_onnx_metadata(tmp_path / "x.onnx")


def test_onnx_reproduces_ultralytics_reference_output(ultra_dir, tmp_path):
    from yolocompress.io.checkpoint import load_model

    x = np.load(ultra_dir / "yolov5n-shapes-e12.input.npy")
    expected = np.load(ultra_dir / "yolov5n-shapes-e12.output.npy")
    path = export_onnx(load_model(ultra_dir / "yolov5n-shapes-e12.pt"), tmp_path / "u.onnx", imgsz=x.shape[2],
                       batch=x.shape[0])
    out = create_session(path).run(None, {"images": x.astype(np.float32)})[0]
    assert np.max(np.abs(out - expected) / np.maximum(np.abs(expected), 1.0)) < 1e-3


def test_image_size_must_fit_the_stride(model, tmp_path):
    with pytest.raises(InputError, match="stride"):
        export_onnx(model, tmp_path / "x.onnx", imgsz=80)


def test_simplify_without_onnxslim_is_an_input_error(model, tmp_path):
    try:
        import onnxslim  # noqa: F401
        pytest.skip("onnxslim is installed")
    except ImportError:
        pass
    with pytest.raises(InputError, match="onnxslim"):
        export_onnx(model, tmp_path / "s.onnx", imgsz=64, simplify=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env, given, threads",
                         [("3", None, 3), (None, None, 0), ("3", 1, 1), ("x", None, 0)])
def test_onnx_runtime_takes_omp_num_threads_unless_a_count_is_given(static_onnx, monkeypatch, env, given,
                                                                      threads):
    """PyTorch reads OMP_NUM_THREADS; our ORT sessions do too, unless a count is given (0: ORT's default)."""
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    session = create_session(static_onnx, threads=given)
    assert session.get_session_options().intra_op_num_threads == threads
