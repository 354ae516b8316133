"""End to end: the digits example (examples/distill_digits.py) must recover a pruned + int8
student to within 1.5 points of its teacher, and distillation must beat hard labels for a small
student (64-16-10) when only a tenth of the images are labelled (the teacher's outputs on the
rest are the transfer set; with every label, the two small students end within noise on digits). Everything is seeded; the run takes ~15 s on two cores."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import distill_digits  # noqa: E402


def test_distillation_recovers_a_pruned_int8_student_and_helps_a_small_one():
    res = distill_digits.run(configs=("80% + int8",), seed=0, full_data_small=False)
    (row,) = res.rows
    assert res.teacher_acc >= 96.0, res  # a sensible teacher
    assert row.before < res.teacher_acc - 10, res  # pruning + quantization did hurt
    assert row.after >= res.teacher_acc - 1.5, res  # ... and distillation recovered it
    assert row.size * 8 < res.teacher_size, res  # and the student is far smaller
    # A small student learning from the teacher on unlabelled images beats the same student
    # trained on the labelled tenth alone (by ~5 points on every seed tried; 2 asserted).
    assert res.transfer_kd > res.transfer_hard + 2, res
