"""The Conan decoder as transformers models (RECIPE.md §1).

Importing this package imports transformers and registers ``model_type="conan"`` with
``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM``, so that after ``import conan_core.model``
a saved directory loads with ``transformers.AutoModel.from_pretrained(path)``.
(``import conan_core`` alone imports none of this.)
"""

from __future__ import annotations

from conan_core.model.configuration import ConanConfig, ModelConfigError
from conan_core.model.modeling import ConanForCausalLM, ConanModel, ConanPreTrainedModel, register_auto
from conan_core.model.sizes import ARCHITECTURES, count_parameters, memory_plan, parameter_breakdown

register_auto()

__all__ = [
    "ARCHITECTURES",
    "ConanConfig",
    "ConanForCausalLM",
    "ConanModel",
    "ConanPreTrainedModel",
    "ModelConfigError",
    "count_parameters",
    "memory_plan",
    "parameter_breakdown",
    "register_auto",
]
