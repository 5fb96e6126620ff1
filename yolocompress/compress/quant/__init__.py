"""int8 quantization deployed on ONNX Runtime.

``plan`` (which tensors of the exported graph get Q/DQ: the single source of truth), ``calibrate`` (the
float range of every planned tensor, on training images), ``qdq`` (the QDQ model of a plan through
``onnxruntime.quantization``, and the graph passes around it), ``verify`` (which planned convolutions ORT
really runs as integer kernels; the int8-vs-fp32 output SQNR), ``ptq`` (calibrated post-training
quantization: settings, pipeline, report), ``qat`` (fake quantization placed by the plan, fine-tuned with the
trainer, exported through ``quantize_static`` with the learned scales), ``sensitivity`` (mAP cost of each
int8 conv, automatic exclusion). ``quantize_ptq`` and ``quantize_qat`` are the one-line entry points.
"""
from yolocompress.compress.quant.plan import ConvSite, PlanConfig, QuantPlan, build_plan
from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
from yolocompress.compress.quant.qat import QatConfig, quantize_qat
from yolocompress.compress.quant.sensitivity import SensitivityResult, auto_exclude, sensitivity
from yolocompress.compress.quant.verify import KernelCheckResult, integer_kernel_report

__all__ = [
    "ConvSite", "KernelCheckResult", "PlanConfig", "QatConfig", "QuantConfig", "QuantPlan",
    "SensitivityResult", "auto_exclude", "build_plan", "integer_kernel_report", "quantize_ptq", "quantize_qat",
    "sensitivity",
]
