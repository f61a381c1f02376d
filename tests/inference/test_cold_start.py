"""Cold start: a labs-only prediction from a run with an image branch never loads TensorFlow,
and gives what the loaded branch gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.conftest import REPO

LABS_ONLY = """
import json, sys
from deeppcos.inference.predictor import load_run
from deeppcos.data.cohort import Cohort, empty_images_table
predictor = load_run(sys.argv[1])
cohort = predictor.cohort()
labs = Cohort(cohort.spec, cohort.patients.head(5), empty_images_table(),
              cohort.feature_columns, cohort.report)
risks = predictor.predict(labs)["risk"].tolist()
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "risks": risks}))
"""


def test_labs_only_prediction_does_not_import_tensorflow(image_run: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LABS_ONLY, str(image_run)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["tensorflow"] is False

    from deeppcos.data.cohort import Cohort, empty_images_table
    from deeppcos.image.branch import ImageBranch
    from deeppcos.inference.predictor import load_run

    predictor = load_run(image_run)
    cohort = predictor.cohort()
    predictor.branches["image"] = ImageBranch.load(image_run / "image")  # loaded up front
    labs = Cohort(
        cohort.spec,
        cohort.patients.head(5),
        empty_images_table(),
        cohort.feature_columns,
        cohort.report,
    )
    loaded = predictor.predict(labs)["risk"]
    pd.testing.assert_series_equal(
        pd.Series(answer["risks"], name="risk"), loaded.reset_index(drop=True), check_dtype=False
    )


def test_the_stand_in_loads_the_branch_for_patients_with_images(image_run: Path) -> None:
    from deeppcos.image.lazy import LazyImageBranch
    from deeppcos.inference.predictor import load_run

    predictor = load_run(image_run)
    branch = predictor.branches["image"]
    assert isinstance(branch, LazyImageBranch) and not branch.loaded
    cohort = predictor.cohort()
    with_images = list(cohort.images["patient_id"].unique()[:2])
    p_image, _ = branch.predict_patients(cohort, with_images)
    assert branch.loaded and p_image.notna().all()
