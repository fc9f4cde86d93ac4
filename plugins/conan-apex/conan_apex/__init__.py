"""conan_core plugin for NVIDIA apex kernels: ``norms`` key ``apex/fused_rmsnorm`` and
``optimizers`` key ``apex/fused_adam``.

Importing this package (or a component module) never imports apex; building a component does,
and raises :class:`~conan_apex.requirements.ApexMissingError` with install instructions when
NVIDIA apex or its compiled extensions are missing.
"""

__version__ = "0.1.0"
