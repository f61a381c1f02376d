"""The deeppcos dashboard's entry point: ``deeppcos dashboard [RUN]`` (or
``DEEPPCOS_RUN=RUN streamlit run dashboards/app.py``).

It sets the page, puts the run-folder box in the sidebar and hands over to one of the pages in
``views/`` (``st.navigation``); each page reads the run through ``dashboards.context``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboards/app.py` puts dashboards/ itself on the path, not its parent.
_PARENT = str(Path(__file__).resolve().parents[1])
if _PARENT not in sys.path:
    sys.path.insert(0, _PARENT)

from deeppcos.extras import require  # noqa: E402

for _module in ("streamlit", "plotly"):  # the 'dashboard' extra, before any page needs it
    require(_module, "dashboard", "the deeppcos dashboard")

import streamlit as st  # noqa: E402

from dashboards import context  # noqa: E402

VIEWS = Path(__file__).resolve().parent / "views"
PAGES = (
    ("cohort.py", "Cohort", ":material/groups:"),
    ("performance.py", "Performance", ":material/monitoring:"),
    ("patient.py", "Patient", ":material/person_search:"),
    ("tuning.py", "Tuning", ":material/tune:"),
    ("predict.py", "Predict", ":material/stethoscope:"),
    ("feedback.py", "Feedback", ":material/rate_review:"),
)


def main() -> None:
    st.set_page_config(page_title="deeppcos", page_icon=":material/monitor_heart:", layout="wide")
    pages = [st.Page(VIEWS / file, title=title, icon=icon) for file, title, icon in PAGES]
    page = st.navigation(pages)
    st.sidebar.markdown("**deeppcos** · decision support, not a diagnosis")
    context.run_selector()
    check = context.current_run()
    if check.ok and check.path is not None:
        record = context.record(check.path.resolve())
        st.sidebar.caption(
            f"run **{record.get('name', check.path.name)}** · trained {record.get('started', '?')}"
            f" · branches: {', '.join(record.get('branches', [])) or '–'}"
        )
    page.run()


main()
