"""Model cost measurements: parameter counts, FLOPs, and CPU latency (PyTorch eager, ONNX Runtime)."""
from yolocompress.profile.flops import flops_by_layer, gflops
from yolocompress.profile.latency import LatencyResult, cpu_name, measure_ort_latency, measure_torch_latency
from yolocompress.profile.params import ParamCount, count_params

__all__ = [
    "LatencyResult",
    "ParamCount",
    "count_params",
    "cpu_name",
    "flops_by_layer",
    "gflops",
    "measure_ort_latency",
    "measure_torch_latency",
]
