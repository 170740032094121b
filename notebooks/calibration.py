# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (embedtune)
#     language: python
#     name: embedtune
# ---

# %% tags=["parameters"]
results_dir = "results"   # the results folder whose experiments and sweeps are read

# %%
import warnings
warnings.simplefilter('ignore')  # the page is for reading
from pathlib import Path
from IPython.display import Markdown, display
from embedtune import calibration

table = calibration.collect(Path(results_dir))
display(Markdown(
    "# Calibration: does dev predict test?\n\n"
    f"{(table['kind'] == 'experiment').sum()} experiments and {(table['kind'] == 'study point').sum()} study points "
    "with a fine-tuned model. *Predicted*: the training run's dev gain (best dev checkpoint minus the base model), "
    "the pilot's extrapolated gain where a pilot ran, the flowchart's verdict, and whether 03_train's keep-base guard shipped the fine-tuned model. *Realised*: fine-tuned minus generic "
    "nDCG@10 on the test queries; it *pays* when p < 0.05."))

# %% [markdown]
# ## How often each predictor agrees with the test outcome

# %%
calibration.agreement(table)

# %%
calibration.plot(table);

# %% [markdown]
# ## Every run

# %%
table.round(4)
