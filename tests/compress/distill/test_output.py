"""Output distillation: zero gradient at the teacher, pulls a student toward it, ignores background boxes."""
from __future__ import annotations

import copy

import pytest
import torch

from yolocompress.compress.distill.output import OutputDistillation
from yolocompress.errors import InputError
from yolocompress.models import build_model

from ..helpers import randomize_batchnorms, randomize_detect


def _outputs(model, x):
    """Raw head outputs with gradients, BatchNorm on its running statistics (as in the gap measured)."""
    model.eval()
    return list(model(x)[1])


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return build_model("yolov5n", nc=3).eval()


def test_student_equal_to_teacher_gets_no_gradient(teacher):
    kd = OutputDistillation(teacher)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        target = list(teacher(x)[1])
    student = [t.clone().requires_grad_(True) for t in target]
    box, obj, cls = kd.loss(student, target)
    (box + obj + cls).backward()
    for s in student:  # d BCE(s, sigmoid(t)) / ds = sigmoid(s) - sigmoid(t) = 0
        assert s.grad.abs().max() < 1e-6


def test_training_on_the_term_moves_the_student_toward_the_teacher(teacher):
    torch.manual_seed(1)
    strong = randomize_detect(randomize_batchnorms(copy.deepcopy(teacher), seed=2), seed=2)  # image-dependent
    student = randomize_detect(randomize_batchnorms(build_model("yolov5n", nc=3), seed=3), seed=3).eval()
    kd = OutputDistillation(strong)
    x = torch.rand(2, 3, 64, 64)
    batch = type("Batch", (), {"imgs": x})()
    with torch.no_grad():
        target = list(strong(x)[1])
        floor = sum(kd.loss(target, target))  # soft-target BCE bottoms out at the targets' entropy

    def excess() -> float:
        with torch.no_grad():
            return float(sum(kd.loss(list(student(x)[1]), target)) - floor)

    before = excess()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    for _ in range(20):
        loss, items = kd(batch, _outputs(student, x), {})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert items["kd_output"] > 0 and before > 0.05
    assert excess() < 0.5 * before


def test_boxes_and_classes_count_only_where_the_teacher_sees_objects():
    kd = OutputDistillation(torch.nn.Identity())
    teacher = torch.full((1, 1, 2, 2, 8), -12.0)  # objectness ~6e-6 everywhere ...
    teacher[0, 0, 0, 0, 4] = 12.0  # ... except one cell
    student = teacher.clone()
    student[0, 0, 1, 1, :4] = 5.0  # wrong boxes where there is no object: (almost) free
    box_bg, _, _ = kd.loss([student], [teacher])
    student = teacher.clone()
    student[0, 0, 0, 0, :4] = 5.0  # the same error on the object: costs
    box_obj, _, _ = kd.loss([student], [teacher])
    assert float(box_obj) > 1000 * float(box_bg)


def test_mismatched_heads_and_bad_weights_are_errors(teacher):
    kd = OutputDistillation(teacher)
    with pytest.raises(ValueError):
        kd.loss([torch.zeros(1, 3, 2, 2, 8)], [torch.zeros(1, 3, 2, 2, 9)])
    with pytest.raises(ValueError):
        kd.loss([torch.zeros(1, 3, 2, 2, 8)], [])
    with pytest.raises(InputError):
        OutputDistillation(teacher, weight=-1)


def test_teacher_is_a_frozen_copy(teacher):
    kd = OutputDistillation(teacher)
    assert kd.teacher is not teacher and not kd.teacher.training
    assert not any(p.requires_grad for p in kd.teacher.parameters())
    before = copy.deepcopy(teacher.state_dict())
    kd.teacher.model[0].conv.weight.data.zero_()
    assert torch.equal(teacher.state_dict()["model.0.conv.weight"], before["model.0.conv.weight"])


def test_term_under_bf16_autocast_gives_a_float32_loss(teacher):
    """The trainer calls extra terms in the forward's precision: teacher in bf16, loss in fp32."""
    kd = OutputDistillation(teacher)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        preds = [t + 0.5 for t in teacher(x)[1]]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss, _ = kd(type("Batch", (), {"imgs": x})(), preds, {})
    reference, _ = kd(type("Batch", (), {"imgs": x})(), preds, {})
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(float(loss) - float(reference)) < 0.02 * float(reference)


def test_parts_are_kl_divergences_weighted_by_the_detection_gains(teacher):
    """Each part is BCE minus the teacher's entropy (0 at the teacher); the gains multiply the parts and the
    objectness of each level is weighted by its balance, as in the detection loss."""
    from yolocompress.compress.distill.config import output_gains
    from yolocompress.engine.loss import DetectionLoss

    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        target = list(teacher(x)[1])
    plain = OutputDistillation(teacher)
    assert all(abs(float(p)) < 1e-6 for p in plain.loss(target, target))
    student = [t + 0.3 * torch.randn_like(t) for t in target]
    # the obj part of level 0 alone, by the formula
    p = target[0][..., 4].sigmoid()
    q = student[0][..., 4].sigmoid()
    p, q = p.double(), q.double()
    kl0 = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()
    one_level = OutputDistillation(teacher).loss(student[:1], target[:1])[1]
    assert float(one_level) == pytest.approx(float(kl0), rel=1e-5)
    gains = output_gains(teacher, None, 256)
    det = DetectionLoss(teacher, imgsz=256)
    assert (gains.box, gains.obj, gains.cls, gains.balance) == (det.box_gain, det.obj_gain, det.cls_gain,
                                                                det.balance)
    scaled = OutputDistillation(teacher, box=gains.box, obj=gains.obj, cls=gains.cls, balance=gains.balance)
    box, obj, cls = plain.loss(student, target)
    level_obj = [plain.loss(student[i:i + 1], target[i:i + 1])[1] for i in range(3)]
    batch = type("Batch", (), {"imgs": x})()
    total, items = scaled(batch, student, {})
    expected = gains.box * box + gains.cls * cls + gains.obj * sum(b * o for b, o in zip(gains.balance, level_obj))
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    assert items["kd_output"] == pytest.approx(float(expected), rel=1e-5)


def test_no_gains_when_the_detection_loss_is_off(teacher):
    """QAT distilling alone (labels off): output KD keeps unit gains, its whole loss."""
    from yolocompress.compress.distill.config import output_gains
    from yolocompress.engine.loss import Hyp

    assert output_gains(teacher, Hyp(box=0.0, obj=0.0, cls=0.0), 256) is None
    assert output_gains(teacher, Hyp(), None) is None
    assert output_gains(teacher, Hyp(), 640).obj == pytest.approx(1.0)
