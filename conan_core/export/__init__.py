"""Export a run as a transformers + sentence-transformers loadable directory (``conan export``).

``export_run(run_dir, out_dir) -> Path``; see :mod:`conan_core.export.writer` for the layout.
Importing this package imports nothing heavy.
"""

from __future__ import annotations

from conan_core.export.writer import ExportError, export_run, verify_export

__all__ = ["ExportError", "export_run", "verify_export"]
