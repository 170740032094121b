"""Whether to draw progress bars, and keeping library progress output out of executed notebooks."""

from __future__ import annotations

import os

NO_PROGRESS_ENV = "EMBEDTUNE_NO_PROGRESS"


def show_progress() -> bool:
    """Progress bars in a terminal or JupyterLab; off inside papermill runs (kept out of reports)."""
    return os.environ.get(NO_PROGRESS_ENV, "0") != "1"


def quiet_loading() -> None:
    """With progress off (notebooks run by the runner, tests), transformers' "Loading weights"
    bar would land in executed notebooks and reports as widget debris: turn it off."""
    if not show_progress():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
