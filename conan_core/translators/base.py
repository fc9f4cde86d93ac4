"""Base class of query translators (registry kind ``translators``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from conan_core.registry import ComponentConfig


class Translator(ABC):
    """``translate(texts, src_lang, tgt_lang) -> list[str | None]`` (None = no translation known).
    Never calls a network service."""

    class Config(ComponentConfig):
        """No fields at this level."""

    @abstractmethod
    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    def translate(self, texts: list[str], src_lang: str, tgt_lang: str) -> list[str | None]:
        """Abstract: see the class docstring."""
