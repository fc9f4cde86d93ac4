"""``classification``: accuracy of classification as retrieval, next to BM25.

As in training (RECIPE §2.4: text -> positive label / negative labels), each text is encoded as a
query (with the query instruction) and each distinct label, rendered through ``label_template``,
as a document; the prediction is the label of highest cosine. The BM25 reference searches the
label texts with each text; when BM25 scores every label 0 (no shared word) it predicts the first
label in sorted order, which is what a constant classifier would do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from conan_core.eval.base import Evaluator, as_encoders, l2_normalize
from conan_core.eval.data import ClassificationData, load_classification
from conan_core.eval.metrics import accuracy


class ClassificationEvaluator(Evaluator):
    """Returns ``{"accuracy", "n_examples", "n_labels", "bm25/accuracy"}`` (accuracy in [0, 1])."""

    task = "classification"

    class Config(Evaluator.Config):
        label_template: str = Field("{label}", description="document text of a label; {label} is replaced")
        query_instruction: str | None = Field(
            None, description="instruction for the texts; None = the embedder's own (from the run)")

    def __init__(self, config: Config, **runtime):
        super().__init__(config, **runtime)
        if "{label}" not in config.label_template:
            from conan_core.errors import ConfigError, ConfigIssue

            raise ConfigError([ConfigIssue("label_template", "must contain {label}", config.label_template)])

    def load(self, path: str | Path) -> ClassificationData:
        return load_classification(path)

    def label_texts(self, data: ClassificationData) -> list[str]:
        return [self.config.label_template.replace("{label}", name) for name in data.label_names]

    def evaluate(self, embedder, data) -> dict:
        """Model and BM25 accuracy on ``data`` (a path or a :class:`ClassificationData`)."""
        data = self._data(data, ClassificationData)
        enc = as_encoders(embedder, batch_size=self.config.batch_size,
                          query_instruction=self.config.query_instruction)
        labels = l2_normalize(enc.corpus(self.label_texts(data)))
        texts = l2_normalize(enc.query(data.texts))
        # argmax takes the first maximum, so ties resolve to the first label in sorted order
        predicted = [data.label_names[i] for i in np.argmax(texts @ labels.T, axis=1)]
        out = {"accuracy": accuracy(predicted, data.labels), "n_examples": len(data),
               "n_labels": len(data.label_names)}
        if self.config.bm25:
            from conan_core.eval.bm25 import BM25Index

            index = BM25Index(self.label_texts(data))
            scores = np.stack([index.scores(t) for t in data.texts])
            out["bm25/accuracy"] = accuracy([data.label_names[i] for i in np.argmax(scores, axis=1)],
                                            data.labels)
        return out
