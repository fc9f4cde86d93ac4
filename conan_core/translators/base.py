"""Base class of query translators (registry kind ``translators``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from conan_core.registry import ComponentConfig


class Translator(ABC):
    """``translate(texts, src_lang, tgt_lang) -> list[str | None]`` (None = no translation known).
    Never calls a network service.

    Contract: the result has ``len(texts)`` entries, aligned with ``texts``; ``src_lang ==
    tgt_lang`` returns the texts unchanged. Language codes are the short codes of RECIPE §6
    (``en``, ``zh``, ``de`` ...). Used by :func:`conan_core.data.clr.build_clr` to translate the
    queries of a retrieval set (RECIPE §6: only queries are translated).
    """

    class Config(ComponentConfig):
        """No fields at this level."""

    @abstractmethod
    def __init__(self, config: ComponentConfig, **runtime):
        self.config = config

    @abstractmethod
    def translate(self, texts: list[str], src_lang: str, tgt_lang: str) -> list[str | None]:
        """Abstract: see the class docstring."""

    def languages(self) -> set[str] | None:
        """Languages this translator can produce, or None when unknown (any may work)."""
        return None
