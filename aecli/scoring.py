"""The score table: which score, which extra columns, which threshold (CLI and API).

The per-row quantities come from ``diagnostics.row_terms``; this module
decides what a score request means: the default score or a VAE's negative
ELBO, what each of the score's terms adds, each column's squared error, and a 0/1
flag from a threshold or from a share (the stored score percentiles: the training
rows', or the held-out rows' where higher).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aecli.diagnostics import row_terms, threshold_for
from aecli.errors import UsageError
from aecli.fitted import FittedModel


@dataclass
class ScoreTable:
    """A checked score request; ``names`` heads the table, ``rows`` fills it."""

    fitted: FittedModel
    field: str  # the row_terms key of the score
    per_feature: bool
    threshold: float | None
    parts: tuple[str, ...] = ()  # the score's terms written beside it (``--terms``)

    @staticmethod
    def check_request(threshold: float | None, contamination: float | None) -> None:
        """The flags alone, before any file is read (F26: a nan threshold is refused)."""
        if threshold is not None and not math.isfinite(threshold):
            raise UsageError(f"must be a finite number, got {threshold}", flag="--threshold")
        if threshold is not None and contamination is not None:
            raise UsageError(
                "give --threshold or --contamination, not both", flag="--contamination"
            )
        if contamination is not None and not 0.0 < contamination < 1.0:
            raise UsageError(
                f"must be between 0 and 1, got {contamination}", flag="--contamination"
            )

    @classmethod
    def make(
        cls,
        fitted: FittedModel,
        *,
        elbo: bool = False,
        per_feature: bool = False,
        threshold: float | None = None,
        contamination: float | None = None,
        terms: bool = False,
    ) -> ScoreTable:
        cls.check_request(threshold, contamination)
        if terms and elbo:
            raise UsageError(
                "writes the terms of the default score; --elbo scores by the ELBO", flag="--terms"
            )
        key = "score" if "score" in fitted.score_quantiles else "error"
        if elbo:
            if fitted.config.kind != "vae":
                raise UsageError(
                    f"needs a vae, this model is of kind '{fitted.config.kind}'", flag="--elbo"
                )
            key = "neg_elbo"
        if contamination is not None:
            if key not in fitted.score_quantiles:
                raise UsageError(
                    "this model file has no training-score percentiles (written by an older "
                    "aecli); use --threshold",
                    flag="--contamination",
                )
            threshold = threshold_for(fitted.score_quantiles[key], contamination)
        field = "neg_elbo_at_mean" if elbo else "score"
        return cls(fitted, field, per_feature, threshold, fitted.score_parts if terms else ())

    @property
    def names(self) -> list[str]:
        """The header. A column's error is headed by its name, or ``error.NAME`` where the
        name is one of the table's own (a feature called ``score``): a table cannot hold two
        columns of one name (JSON Lines would keep one value, Parquet readers refuse)."""
        own = ["score", *(f"score.{name}" for name in self.parts)]
        flag = ["anomaly"] if self.threshold is not None else []
        columns = self.fitted.column_names if self.per_feature else []
        return [*own, *(f"error.{c}" if c in own + flag else c for c in columns), *flag]

    @property
    def integer_columns(self) -> tuple[int, ...]:
        """The 0/1 ``anomaly`` flag is written as an integer, as the help says."""
        return (len(self.names) - 1,) if self.threshold is not None else ()

    def rows(self, values: np.ndarray) -> np.ndarray:
        """The table's rows for raw rows: score, its terms, per-feature errors, flag."""
        terms = row_terms(self.fitted, values, per_feature=self.per_feature, parts=bool(self.parts))
        parts = [terms[self.field][:, None]]
        if self.parts:
            parts.append(terms["parts"])
        if self.per_feature:
            parts.append(terms["per_feature"])
        if self.threshold is not None:
            parts.append((terms[self.field] > self.threshold)[:, None].astype(np.float32))
        return np.hstack(parts)


@dataclass
class TopRows:
    """Every row's score and the few highest rows' per-feature errors (``score --hist``).

    One float per row, as ``evaluate`` keeps; the per-feature errors are computed again for
    at most ``keep`` rows of each chunk, the only ones that can be among the highest.
    """

    fitted: FittedModel
    keep: int = 5
    scores: list[np.ndarray] = field(default_factory=list)
    top: list[tuple[float, str, np.ndarray]] = field(default_factory=list)
    seen: int = 0

    def add(self, values: np.ndarray, scores: np.ndarray, ids: Any = None) -> None:
        from aecli.io.ids import as_text

        self.scores.append(np.asarray(scores, dtype=np.float32))
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[: self.keep]
        if len(order):
            errors = row_terms(self.fitted, values[order], per_feature=True)["per_feature"]
            labels = as_text(ids) if ids is not None else None
            for k, i in enumerate(order.tolist()):
                label = f"row {self.seen + i}" if labels is None else f"{labels[i]}"
                self.top.append((float(scores[i]), label, errors[k]))
            self.top = sorted(self.top, key=lambda t: -t[0])[: self.keep]
        self.seen += len(values)

    def all_scores(self) -> np.ndarray:
        return np.concatenate(self.scores) if self.scores else np.zeros(0, np.float32)
