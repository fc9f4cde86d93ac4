"""Session-wide settings of the test suite: nothing may reach a network. Hugging Face hubs and
datasets are offline (tests build their data locally) and W&B runs offline (its files stay in the
test's run directory)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
