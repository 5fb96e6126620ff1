"""Knowledge distillation for detectors.

``output`` (the teacher's head outputs as soft targets; used by QAT with the float model as teacher),
``feature`` (channel-wise distillation of the neck outputs, with 1x1 connectors where channel counts differ)
and the stage that trains a student under a teacher with either or both, ``distill_model``. Any ``Trainer``
takes the loss terms as ``extra_losses`` entries; ``distill_terms`` builds them from a ``DistillConfig``
for every stage that distills (``distill``, ``finetune``, prune's fine-tune, QAT).
"""
from yolocompress.compress.distill.config import DistillConfig, as_distill_config, distill_terms
from yolocompress.compress.distill.feature import FeatureDistillation, cwd_loss
from yolocompress.compress.distill.output import OutputDistillation
from yolocompress.compress.distill.stage import distill_model

__all__ = ["DistillConfig", "FeatureDistillation", "OutputDistillation", "as_distill_config", "cwd_loss",
           "distill_model", "distill_terms"]
