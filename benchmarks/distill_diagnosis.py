"""Why distillation hurts the pruned student (issue 16): one fine-tune of it under a KD variant, with the
gradient norms the trainer clips.

The student is the file ``bench_distill.py pruned`` makes (``--student``), the teacher the shipped baseline.
Variants: ``--method none|output|feature|both``, ``--weight`` (both KD weights), ``--no-connector-bn`` (feature
KD connectors as a bare 1x1 convolution: the library's connector is conv + BatchNorm; replaced here after
construction). Prints one JSON line: the val mAPs after the last epoch, the last epoch's losses and the L2
norm of the model's and the connectors' gradients at the first, middle and last optimizer step (before the
trainer's clipping at ``MAX_GRAD_NORM``). Run from the repository root, one at a time:

    PYTHONPATH=. python3 benchmarks/distill_diagnosis.py --method feature --weight 0.1 --epochs 3 --seed 0
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="runs/bench_distill/student-ratio0.5-seed0.pt")
    p.add_argument("--method", choices=("none", "output", "feature", "both"), default="feature")
    p.add_argument("--weight", type=float, default=1.0, help="output and feature KD weight")
    p.add_argument("--no-connector-bn", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--imgsz", type=int, default=256)
    args = p.parse_args(argv)

    import yolocompress.compress.distill.feature as feature
    import yolocompress.engine.trainer as trainer
    from yolocompress.compress.distill import DistillConfig, distill_model
    from yolocompress.compress.finetune import FinetuneConfig, finetune
    from yolocompress.demo import baseline_path, demo_data
    from yolocompress.io.checkpoint import load_model

    if args.no_connector_bn:
        build = feature.FeatureDistillation.__init__

        def without_bn(self, *a, **k):
            build(self, *a, **k)
            for seq in self.trainable.values():
                seq[1] = nn.Identity()
        feature.FeatureDistillation.__init__ = without_bn

    norms: list[tuple[float, float]] = []
    step = trainer.Trainer._optimizer_step

    def recording_step(self, epoch, where):  # the norms the trainer's clip sees, before it clips
        def norm(params):
            grads = [q.grad.detach().float().norm() for q in params if q.grad is not None]
            return float(torch.stack(grads).norm()) if grads else 0.0
        # on the CPU the gradient scaler is off: these are the gradients the clip sees
        norms.append((norm(self.model.parameters()), norm(self.extra_modules.parameters())))
        step(self, epoch, where)
    trainer.Trainer._optimizer_step = recording_step

    data = str(demo_data())
    student, teacher = load_model(args.student), load_model(baseline_path())
    train = FinetuneConfig(epochs=args.epochs, imgsz=args.imgsz, seed=args.seed)
    t0 = time.perf_counter()
    if args.method == "none":
        _, report = finetune(student, data, train)
    else:
        kd = DistillConfig(method=args.method, weight=args.weight, feature_weight=args.weight, check_teacher=False)
        _, report = distill_model(student, teacher, data, kd, train)
    last = report.details["history"][-1]
    picks = [norms[0], norms[len(norms) // 2], norms[-1]] if norms else []
    print(json.dumps({**vars(args), "map50": last["metrics/mAP_0.5"], "map50_95": last["metrics/mAP_0.5:0.95"],
                      "losses": {k: v for k, v in last.items() if k.startswith("train/")},
                      "grad_norm_model_connectors_first_middle_last": picks, "steps": len(norms),
                      "wall_s": time.perf_counter() - t0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
