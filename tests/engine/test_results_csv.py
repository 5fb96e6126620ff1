"""results.csv: every key any epoch logged is a column, in first-seen order; floats to 6 digits."""
from __future__ import annotations

import math

from yolocompress.engine.results_csv import write_results_csv


def test_columns_are_the_union_of_the_rows(tmp_path):
    path = tmp_path / "results.csv"
    write_results_csv([{"epoch": 0, "train/box_loss": 0.123456789},
                       {"epoch": 1, "train/box_loss": 0.1, "metrics/mAP_0.5": math.nan}], path)
    assert path.read_text().splitlines() == ["epoch,train/box_loss,metrics/mAP_0.5", "0,0.123457,",
                                             "1,0.1,nan"]
