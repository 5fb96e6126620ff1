"""Knowledge distillation for detectors: ``output`` (the teacher's head outputs as soft targets), used by QAT
(teacher: the float model) and optionally by the pruning fine-tune (teacher: the unpruned model); any
``Trainer`` takes it as an ``extra_losses`` term."""
from yolocompress.compress.distill.output import OutputDistillation

__all__ = ["OutputDistillation"]
