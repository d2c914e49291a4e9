"""``aecli.Autoencoder``: the CLI's models as a scikit-learn estimator, for notebooks.

One class covers every kind. It is a transformer (``transform`` gives codes,
``inverse_transform`` decodes them) and an outlier detector in scikit-learn's
convention (``score_samples``: higher is more normal; ``predict``: +1 inlier,
-1 outlier), and it reads and writes the same ``.safetensors`` file as the CLI,
so a model trained here is used from the shell and the other way round.

The keyword arguments are the CLI's flags with ``_`` for ``-``, and their
defaults are the config dataclasses' (``aecli.config``), so the two cannot
drift. Needs scikit-learn (``pip install '.[sklearn]' -c constraints.txt``); the CLI does not.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from aecli.config import ModelConfig, TrainConfig
from aecli.pythonic import as_os_errors, as_value_errors, tabular, text_columns
from aecli.sizes import DEFAULT_CHANNELS

if TYPE_CHECKING:
    from aecli.fitted import FittedModel

_M, _T = ModelConfig(), TrainConfig()


class Autoencoder(TransformerMixin, OutlierMixin, BaseEstimator):
    """An autoencoder of any kind (basic, denoise, sparse, vae), as in ``aecli train``.

    ``hidden``: "auto" (one layer sized from the data), "none", or a tuple of
    sizes; ``latent``: None for a quarter of the width (1 to 32). ``arch="conv"``
    needs ``image_shape`` (H, W) or (C, H, W) and uses ``channels``. ``contamination``
    is the share of training rows that ``predict`` calls outliers, or of the rows training
    held out where they score higher (the CLI's ``score --contamination``). ``batch_size``
    and ``lr`` 0: chosen from the table, as the CLI's defaults (64 at 3e-3, or 128 at 6e-3
    from 4096 rows); ``summary_`` says which.
    """

    def __init__(
        self,
        kind: str = str(_M.kind),
        hidden: Any = "auto",
        latent: int | None = None,
        tied: bool = _M.tied,
        activation: str = str(_M.activation),
        loss: str = "auto",
        noise: str = "auto",
        noise_std: float = _M.noise_std,
        dropout: float = _M.dropout,
        sparsity_target: float = _M.sparsity_target,
        sparsity_weight: float = _M.sparsity_weight,
        beta: float = _M.beta,
        arch: str = str(_M.arch),
        channels: tuple[int, ...] = DEFAULT_CHANNELS,
        scale: str = str(_T.scale),
        epochs: int = _T.epochs,
        batch_size: int = _T.batch_size,
        lr: float = _T.lr,
        weight_decay: float = _T.weight_decay,
        val_fraction: float = _T.val_fraction,
        early_stopping: int = _T.early_stopping,
        seed: int = _T.seed,
        device: str = _T.device,
        precision: str = str(_T.precision),
        threads: int = _T.threads,
        beta_warmup: int = _T.beta_warmup,
        layerwise: bool = _T.layerwise,
        finetune_epochs: int = _T.finetune_epochs,
        image_shape: tuple[int, ...] | None = None,
        contamination: float = 0.1,
        verbose: bool = False,
    ) -> None:
        self.kind = kind
        self.hidden = hidden
        self.latent = latent
        self.tied = tied
        self.activation = activation
        self.loss = loss
        self.noise = noise
        self.noise_std = noise_std
        self.dropout = dropout
        self.sparsity_target = sparsity_target
        self.sparsity_weight = sparsity_weight
        self.beta = beta
        self.arch = arch
        self.channels = channels
        self.scale = scale
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.early_stopping = early_stopping
        self.seed = seed
        self.device = device
        self.precision = precision
        self.threads = threads
        self.beta_warmup = beta_warmup
        self.layerwise = layerwise
        self.finetune_epochs = finetune_epochs
        self.image_shape = image_shape
        self.contamination = contamination
        self.verbose = verbose

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # torch computes in float32
        tags.non_deterministic = self.device not in ("cpu", "auto")  # CUDA kernels may not be
        return tags

    # -- fitting -----------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> Autoencoder:
        """Train on the rows of X (an array or a DataFrame; y is ignored)."""
        from aecli.io import Table
        from aecli.sizes import parse_hidden
        from aecli.training import ModelRequest, prepare

        self._check_types()
        values = self._check_X(X, reset=True)
        if not 0.0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {self.contamination}")
        names = getattr(self, "feature_names_in_", None)
        columns = None if names is None else [str(n) for n in names]
        table = Table(values, columns, (values.shape[1],))
        with as_value_errors():
            hidden = self.hidden
            if hidden is None or isinstance(hidden, str):
                hidden = parse_hidden(hidden)
            elif isinstance(hidden, (int, np.integer)):  # hidden=5: one layer of 5
                hidden = (hidden,)
            params = {
                **self.get_params(),
                "hidden": None if hidden is None else tuple(int(h) for h in hidden),
                "channels": tuple(int(c) for c in self.channels),
                "image_shape": None if self.image_shape is None else tuple(self.image_shape),
            }
            request = ModelRequest.from_params(params)
            train_config = TrainConfig.from_params(params)
            fitted, history, epochs = self._train(prepare(table, request, train_config))
        if history.stop == "non-finite":
            raise ValueError(f"training diverged: {history.message}")
        if fitted.summary.get("diverged"):  # scikit-learn's way: a warning, and the model
            import warnings

            warnings.warn(
                "training diverged: the reconstruction error is worse than predicting each "
                f"column's mean; try a smaller lr (this fit: lr={fitted.train_config.lr!r})",
                RuntimeWarning,
                stacklevel=2,
            )
        self._set_fitted(fitted)
        self.history_ = epochs
        normal = self.score_samples(X)  # _set_fitted took offset_ from the stored percentiles
        # PyOD's names for the training rows: higher is more abnormal, 1 is an outlier.
        self.decision_scores_ = -normal
        self.threshold_ = -self.offset_
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the mean squared reconstruction error in the model's scaled units.

        Measured as training's loss is, against the clipped scaled rows (``evaluate``'s
        ``mse_scaled``), so that ``GridSearchCV`` ranks models by what ``history_``
        shows. Higher is better, as GridSearchCV's default scoring wants; y is ignored.
        """
        return -float(self.evaluate(X)["mse_scaled"])

    def _train(self, run: Any) -> Any:
        """The run, with a row of ``history_`` per epoch, and a progress bar if ``verbose``."""
        from aecli.training import EpochBar, record_of

        epochs: list[dict[str, Any]] = []
        with EpochBar(run.epochs_in_all(), quiet=not self.verbose, forced=True) as bar:

            def on_epoch(stats: Any) -> None:
                epochs.append(record_of(stats))
                if bar is not None:
                    bar(stats)

            result = run.execute(on_epoch)
        if bar is not None:  # the line aecli train ends with, but the file it writes
            from aecli.training import training_summary

            sys.stderr.write(training_summary(result.fitted, result.history.seconds, "") + "\n")
        return result.fitted, result.history, epochs

    def _set_fitted(self, fitted: FittedModel) -> None:
        self.fitted_ = fitted
        self.n_features_in_ = fitted.config.n_inputs
        self.summary_ = fitted.summary
        self.history_: list[dict[str, Any]] = []  # fit fills it; a file keeps no epochs
        quantiles = fitted.score_quantiles.get("score", fitted.score_quantiles.get("error"))
        if quantiles is not None:  # the rows' score percentiles, as the CLI keeps them
            from aecli.diagnostics import threshold_for

            self.offset_ = -threshold_for(quantiles, self.contamination)

    # -- the transformer ----------------------------------------------------
    def transform(self, X: Any) -> np.ndarray:
        """Codes of the rows (a VAE's posterior mean), as ``aecli encode``."""
        return self._fitted().encode(self._check_X(X))

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Rows in the original units decoded from codes."""
        fitted = self._fitted()
        codes = check_array(X, dtype=np.float32)
        if codes.shape[1] != fitted.config.latent:
            raise ValueError(
                f"X has {codes.shape[1]} features, but the codes have {fitted.config.latent}"
            )
        return fitted.decode_codes(codes)

    def reconstruct(self, X: Any) -> np.ndarray:
        """Rows passed through the model, in the original units, as ``aecli reconstruct``."""
        return self._fitted().reconstruct(self._check_X(X))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Code names ``z0, z1, ...``, as ``aecli encode`` heads its columns."""
        return np.asarray(self._fitted().code_names, dtype=object)

    # -- the outlier detector -----------------------------------------------
    def score_samples(self, X: Any) -> np.ndarray:
        """Minus ``aecli score``'s score: higher is more normal (scikit-learn's sign)."""
        from aecli.diagnostics import row_terms

        return -row_terms(self._fitted(), self._check_X(X))["score"].astype(np.float64)

    def score_terms(self, X: Any) -> dict[str, np.ndarray]:
        """What each of the score's terms adds, by name, as ``aecli score --terms`` writes
        them: they sum to minus ``score_samples`` (within float32 rounding)."""
        from aecli.diagnostics import row_terms

        fitted = self._fitted()
        added = row_terms(fitted, self._check_X(X), parts=True)["parts"].astype(np.float64)
        return dict(zip(fitted.score_parts, added.T, strict=True))

    def decision_function(self, X: Any) -> np.ndarray:
        """Negative for outliers: ``score_samples(X) - offset_``."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers, -1 for outliers (above ``score --contamination``'s threshold)."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    # -- the rest of the CLI --------------------------------------------------
    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """n new rows from a VAE's prior, as ``aecli sample -n N --seed S``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: the number of rows must be a whole number >= 1, got {n!r}")
        fitted = self._fitted()
        if fitted.config.kind != "vae":
            kind = fitted.config.kind
            raise ValueError(f"sample: sampling needs a vae (kind='vae'); this model is {kind}")
        with as_value_errors():
            return fitted.sample(n, seed)

    def evaluate(self, X: Any, baseline: str | None = None) -> dict[str, Any]:
        """The report of ``aecli evaluate --json`` (docs/evaluate.md); baseline="pca" adds PCA's."""
        from aecli.diagnostics import Evaluator

        fitted = self._fitted()
        if baseline not in (None, "pca") or (baseline == "pca" and fitted.pca is None):
            raise ValueError(f"baseline: {baseline!r} is not available for this model")
        evaluator = Evaluator(fitted, baseline_pca=baseline == "pca")
        evaluator.update(self._check_X(X))
        return evaluator.result()

    def save(self, path: str) -> None:
        """Write the model file the CLI reads (``aecli encode PATH DATA`` and the rest)."""
        from aecli import modelfile

        with as_os_errors(str(path)):
            modelfile.save(self._fitted(), str(path))

    @classmethod
    def load(cls, path: str) -> Autoencoder:
        """A fitted estimator from a model file written by ``aecli train`` or ``save``."""
        from aecli import modelfile

        with as_os_errors(str(path)):
            fitted = modelfile.load(str(path))
        # The file's configs give every argument they name (the names are the same).
        stored = {**fitted.train_config.to_dict(), **fitted.config.to_dict()}
        arguments = {k: stored[k] for k in cls().get_params() if k in stored}
        arguments["hidden"] = tuple(fitted.config.hidden) or "none"
        arguments["image_shape"] = fitted.row_shape if len(fitted.row_shape) in (2, 3) else None
        arguments["channels"] = tuple(fitted.config.channels) or DEFAULT_CHANNELS
        estimator = cls(**arguments)
        estimator._set_fitted(fitted)
        if fitted.columns is not None:
            estimator.feature_names_in_ = np.asarray(fitted.columns, dtype=object)
        return estimator

    # -- helpers --------------------------------------------------------------
    _WHOLE = ("epochs", "batch_size", "early_stopping", "seed", "threads", "beta_warmup",
              "finetune_epochs")  # fmt: skip
    _REAL = ("noise_std", "dropout", "sparsity_target", "sparsity_weight", "beta", "lr",
             "weight_decay", "val_fraction", "contamination")  # fmt: skip

    def _check_types(self) -> None:
        """A ValueError naming the argument, before any work, for a value of the wrong type.

        (``epochs=2.5`` failed deep inside with a TypeError naming nothing, F3-10.)
        """
        for name in (*self._WHOLE, "latent"):
            value = getattr(self, name)
            if name == "latent" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                hint = " (the seed decides the model: give a number)" if name == "seed" else ""
                raise ValueError(f"{name}: must be a whole number, got {value!r}{hint}")
        for name in self._REAL:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"{name}: must be a number, got {value!r}")
        for name in ("kind", "activation", "loss", "noise", "scale", "precision", "arch", "device"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: must be text, got {getattr(self, name)!r}")
        for name in ("tied", "layerwise"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}: must be True or False, got {getattr(self, name)!r}")
        hidden = self.hidden
        sizes = (hidden,) if isinstance(hidden, (int, np.integer)) else hidden
        ok = (
            hidden is None
            or isinstance(hidden, str)
            or (
                not isinstance(hidden, bool)
                and isinstance(sizes, (tuple, list))
                and all(isinstance(h, (int, np.integer)) and not isinstance(h, bool) for h in sizes)
            )
        )
        if not ok:
            raise ValueError(f"hidden: must be 'auto', 'none' or layer sizes, got {hidden!r}")

    def _fitted(self) -> FittedModel:
        check_is_fitted(self, "fitted_")
        return self.fitted_

    def _check_X(self, X: Any, reset: bool = False) -> np.ndarray:
        """Rows as finite float32, with scikit-learn's checks of width and feature names."""
        if not reset:
            check_is_fitted(self, "fitted_")
        X = tabular(X)
        text_columns(X)
        values = validate_data(self, X, reset=reset, dtype=np.float32, ensure_min_samples=1)
        return np.ascontiguousarray(values, dtype=np.float32)
