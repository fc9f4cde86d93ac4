"""Training: the loop, checkpoints, fault injection, distributed helpers and the four stages.

Entry points: :func:`conan_core.train.stages.run_stage` (one stage of a run directory),
:func:`conan_core.train.prepare.prepare_run` (demo data + tokenizer) and
:class:`conan_core.train.loop.Trainer` (the engine, usable with any objective module).
Nothing is imported here, so ``import conan_core.train`` stays cheap.
"""
