"""int8 quantization deployed on ONNX Runtime.

``plan`` (which tensors of the exported graph get Q/DQ: the single source of truth), ``ptq`` (calibrated
post-training quantization with ``onnxruntime.quantization``), ``verify`` (which planned convolutions ORT
really runs as integer kernels). ``quantize_ptq`` is the one-line entry point.
"""
from yolocompress.compress.quant.plan import ConvSite, PlanConfig, QuantPlan, build_plan
from yolocompress.compress.quant.ptq import QuantConfig, QuantReport, quantize_ptq
from yolocompress.compress.quant.verify import KernelReport, integer_kernel_report

__all__ = [
    "ConvSite", "KernelReport", "PlanConfig", "QuantConfig", "QuantPlan", "QuantReport", "build_plan",
    "integer_kernel_report", "quantize_ptq",
]
