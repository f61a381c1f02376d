"""The image branch of a loaded run, loaded at its first real use.

Loading it imports TensorFlow and Keras (about 5 s on 2 cores). A prediction or an explanation
for patients without images never needs the network: their image answer is NaN, of a width the
branch's metadata records. So ``load_run`` hands out this stand-in, which loads the branch only
when something else is asked of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from deeppcos.data.cohort import Cohort

META_FILE = "image_branch.json"


class LazyImageBranch:
    """Stands in for :class:`deeppcos.image.branch.ImageBranch`; any attribute but
    :meth:`predict_patients` on image-free patients loads the real branch."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._branch: Any = None
        try:
            meta = json.loads((self.folder / META_FILE).read_text(encoding="utf-8"))
            self._width: int | None = int(meta["embedding_width"])
        except (OSError, ValueError, KeyError, TypeError):
            self._width = None  # an older run, or a broken file: loading will say which

    @property
    def loaded(self) -> bool:
        return self._branch is not None

    def load(self) -> Any:
        if self._branch is None:
            from deeppcos.image.branch import ImageBranch

            self._branch = ImageBranch.load(self.folder)
        return self._branch

    def predict_patients(
        self, cohort: Cohort, patient_ids: Sequence[str] | None = None
    ) -> tuple[pd.Series, pd.DataFrame]:
        from deeppcos.image.branch import has_images, without_images

        if self._branch is None and self._width is not None:
            ids = (
                [str(i) for i in cohort.patients["patient_id"]]
                if patient_ids is None
                else list(patient_ids)
            )
            if not has_images(cohort, ids):
                return without_images(ids, self._width)
        return self.load().predict_patients(cohort, patient_ids)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("folder", "_branch", "_width"):
            raise AttributeError(name)  # not yet set (copy/pickle probing): never load for it
        return getattr(self.load(), name)
