"""Experiment trackers (registry kind ``trackers``): where a stage's scalars go besides
``metrics.jsonl`` (``report_to`` in the run config)."""
