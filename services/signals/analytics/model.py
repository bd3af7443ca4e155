"""Next-day direction models, one per symbol, each validated walk-forward on its own history.

A symbol's model is trained and tested only on that symbol's bars, so its signal for a
date never depends on which other symbols the run scores. Every row is one date with
features known at that date's close; its label is whether the next bar closes higher,
so the label becomes known at the next bar's date. Folds are split by date and train
on an expanding window that keeps only rows whose label date is before the fold's
first test date: neither a training row nor its outcome can come from the period
being predicted.

Out of sample every model is measured against two baselines on the same days, the
moving-average rule (up while the 20-day average is above the 50-day) and always-up,
and gets a verdict that says plainly whether it beat them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from services.signals.analytics.features import MODEL_FEATURES, WARM_UP_BARS

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# scikit-learn (with scipy and joblib) is imported by the functions that fit, inspect or
# serialize estimators, never with this module: the signals service's own process reads
# these results (and their dataclasses) while the fitting runs in its model worker
# (services/signals/workflow/model_worker.py).

RANDOM_STATE = 0
# A prediction this far from a coin flip counts as a call; hit_rate scores only those.
DECISIVE_MARGIN = 0.05
# A model is called better only if it beats its best baseline by this many standard
# errors of its accuracy: a point or two over a few hundred days is noise.
VERDICT_STANDARD_ERRORS = 2.0

MODEL_TYPE = "LogisticRegression (StandardScaler pipeline)"
SCOPE = (
    "one model per symbol, trained and walked forward on that symbol's own history only: "
    "a symbol's signal does not depend on the other symbols of the run"
)
BASELINES = (("baseline_accuracy", "moving-average baseline"), ("up_rate", "always-up rule"))
VERDICTS = {
    "better": "beat both baselines out of sample by more than the noise of its predictions",
    "no_better": "at or above its best baseline, but within the noise of its predictions",
    "worse": "below at least one baseline out of sample: treat its signals as no better than chance",
    "untested": "no out-of-sample predictions to judge",
}


class NotEnoughHistory(ValueError):
    """A symbol has too few labelled days to train before a first test date."""


def default_estimator() -> Pipeline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("classifier", LogisticRegression(C=1.0, max_iter=1000, random_state=RANDOM_STATE)),
        ]
    )


@dataclass(frozen=True)
class SymbolModel:
    """One symbol's walk-forward: folds, out-of-sample predictions, metrics and final estimator."""

    symbol: str
    training_window: dict
    folds: list[dict]
    metrics: dict
    predictions: pd.DataFrame
    estimator: Any
    coefficients: dict[str, float]
    latest_features: pd.DataFrame = field(repr=False)


@dataclass(frozen=True)
class WalkForwardResult:
    """Every symbol's walk-forward; `unscored` names the symbols without a model signal and why."""

    model_type: str
    params: dict
    feature_names: list[str]
    training_window: dict
    folds: list[dict]
    metrics: dict
    predictions: pd.DataFrame
    models: dict[str, Any]
    latest_features: pd.DataFrame = field(repr=False)
    per_symbol: dict[str, dict] = field(default_factory=dict)
    coefficients: dict[str, dict[str, float]] = field(default_factory=dict)
    unscored: dict[str, str] = field(default_factory=dict)

    def latest_probabilities(self) -> dict[str, float]:
        """Symbol -> P(next close higher) for each symbol's last bar (which has no label yet),
        from that symbol's own model."""
        probabilities = {}
        for symbol in self.latest_features.index:
            row = self.latest_features.loc[[symbol], self.feature_names]
            probabilities[symbol] = float(_prob_up(self.models[symbol], row)[0])
        return probabilities

    def latest_dates(self) -> dict[str, str]:
        """Symbol -> ISO date of the bar latest_probabilities() scores."""
        return {s: d.date().isoformat() for s, d in self.latest_features["date"].items()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready model card (everything but the estimators and rows), verdict first."""
        return {
            "verdict": self.metrics.get("verdict"),
            "verdict_text": self.metrics.get("verdict_text"),
            "model_type": self.model_type,
            "scope": self.params.get("scope"),
            "params": self.params,
            "feature_names": self.feature_names,
            "training_window": self.training_window,
            "metrics": self.metrics,
            # Lists of flat rows, so that each reads as a table.
            "per_symbol": [{"symbol": s, **row} for s, row in self.per_symbol.items()],
            "unscored": self.unscored,
            "folds": self.folds,
            "coefficients": [{"symbol": s, **c} for s, c in self.coefficients.items()],
        }


def best_baseline(metrics: Mapping[str, Any]) -> tuple[str, float] | None:
    """(name, accuracy) of the baseline that scored best on the same out-of-sample days."""
    known = [(name, metrics[key]) for key, name in BASELINES if metrics.get(key) is not None]
    return max(known, key=lambda item: item[1]) if known else None


def verdict(metrics: Mapping[str, Any], subject: str = "The model") -> dict[str, str]:
    """{"verdict": one of VERDICTS, "verdict_text": one plain sentence} for out-of-sample metrics."""
    accuracy, n = metrics.get("accuracy"), metrics.get("n_predictions") or 0
    best = best_baseline(metrics)
    if accuracy is None or not n or best is None:
        return {"verdict": "untested", "verdict_text": f"{subject} has no out-of-sample predictions to judge."}
    beaten_by = [(name, metrics[key]) for key, name in BASELINES if (metrics.get(key) or 0.0) > accuracy]
    if beaten_by:
        names = " and the ".join(name for name, _ in beaten_by)
        values = " and ".join(f"{value:.1%}" for _, value in beaten_by)
        return {
            "verdict": "worse",
            "verdict_text": f"{subject} did worse than the {names} out of sample "
            f"({accuracy:.1%} vs {values}): treat its signals as no better than chance.",
        }
    name, value = best
    noise = VERDICT_STANDARD_ERRORS * math.sqrt(accuracy * (1.0 - accuracy) / n)
    if accuracy - value < noise:
        return {
            "verdict": "no_better",
            "verdict_text": f"{subject} did not clearly beat the {name} out of sample "
            f"({accuracy:.1%} vs {value:.1%} over {n} predictions, where a gap under {noise * 100:.1f} "
            "points is noise): treat its signals as no better than chance.",
        }
    others = " and ".join(
        f"{metrics[key]:.1%} for the {label}" for key, label in BASELINES if metrics.get(key) is not None
    )
    return {
        "verdict": "better",
        "verdict_text": f"{subject} did better than its baselines out of sample "
        f"({accuracy:.1%} vs {others}, over {n} predictions).",
    }


def _labelled_rows(
    symbol: str, features: pd.DataFrame, bars: pd.DataFrame, feature_names: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with complete features and a known label, the last bar's row if complete)."""
    close = bars["close"].astype(float)
    frame = features.reindex(close.index)
    rows = pd.DataFrame(
        {
            "symbol": symbol,
            "date": close.index,
            "label_date": close.index.to_series().shift(-1).to_numpy(),
            "actual_up": (close.shift(-1) > close).to_numpy(),
            "baseline_up": (frame["sma_20"] > frame["sma_50"]).to_numpy(),
        }
    )
    for name in feature_names:
        rows[name] = frame[name].to_numpy()
    complete = rows.dropna(subset=feature_names)
    labelled = complete[complete["label_date"].notna()].reset_index(drop=True)
    last = rows.iloc[[-1]]
    if last[feature_names].isna().any(axis=None):
        last = last.iloc[0:0]
    return labelled, last.set_index("symbol")[["date", *feature_names]]


def _design(rows: pd.DataFrame, feature_names: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    # The (symbol, date) index travels into fit/predict so an instrumented estimator
    # can see exactly which rows it was given.
    index = pd.MultiIndex.from_arrays([rows["symbol"], rows["date"]], names=["symbol", "date"])
    X = pd.DataFrame(rows[feature_names].to_numpy(dtype=float), index=index, columns=feature_names)
    y = pd.Series(rows["actual_up"].to_numpy(dtype=int), index=index, name="actual_up")
    return X, y


def _fit(make_estimator: Callable[[], Any], X: pd.DataFrame, y: pd.Series) -> Any:
    from sklearn.dummy import DummyClassifier

    # A window where the stock only rose (or only fell) has one class; a logistic
    # regression cannot fit that, the class prior is the honest prediction.
    estimator = make_estimator() if y.nunique() > 1 else DummyClassifier(strategy="prior")
    return estimator.fit(X, y)


def _prob_up(estimator: Any, X: pd.DataFrame) -> np.ndarray:
    proba = estimator.predict_proba(X)
    classes = list(estimator.classes_)
    if 1 not in classes:
        return np.zeros(len(X))
    return proba[:, classes.index(1)]


def _scores(predicted: np.ndarray, actual: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    n = len(actual)
    right = predicted == actual
    predicted_up = int(predicted.sum())
    decisive = np.abs(prob - 0.5) >= DECISIVE_MARGIN
    return {
        "accuracy": float(right.mean()) if n else None,
        "precision": float((predicted & actual).sum() / predicted_up) if predicted_up else None,
        "hit_rate": float(right[decisive].mean()) if decisive.any() else None,
        "n": n,
        "n_decisive": int(decisive.sum()),
    }


def _out_of_sample_metrics(predictions: pd.DataFrame, subject: str) -> dict[str, Any]:
    predicted, actual, baseline_up = (
        predictions[column].to_numpy(dtype=bool) for column in ("predicted_up", "actual_up", "baseline_up")
    )
    scores = _scores(predicted, actual, predictions["prob_up"].to_numpy())
    baseline = _scores(baseline_up, actual, baseline_up.astype(float))
    metrics = {
        "accuracy": scores["accuracy"],
        "precision": scores["precision"],
        "hit_rate": scores["hit_rate"],
        "n_predictions": scores["n"],
        "n_decisive": scores["n_decisive"],
        "baseline_accuracy": baseline["accuracy"],
        "baseline_precision": baseline["precision"],
        "up_rate": float(actual.mean()) if len(actual) else None,
    }
    return {**metrics, **verdict(metrics, subject)}


def _json_params(estimator: Any) -> dict[str, Any]:
    params = estimator.get_params(deep=True)
    return {
        key: value
        for key, value in params.items()
        # sklearn reports parameters on their way out as the string "deprecated".
        if (value is None or isinstance(value, (bool, int, float, str))) and value != "deprecated"
    }


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).date().isoformat()


def _is_pipeline(estimator: Any) -> bool:
    from sklearn.pipeline import Pipeline

    return isinstance(estimator, Pipeline)


def _classifier(estimator: Any) -> Any:
    return estimator.steps[-1][1] if _is_pipeline(estimator) else estimator


def _walk_forward_symbol(
    symbol: str,
    features: pd.DataFrame,
    bars: pd.DataFrame,
    names: list[str],
    *,
    n_folds: int,
    min_train_rows: int,
    make_estimator: Callable[[], Any],
) -> SymbolModel:
    rows, latest = _labelled_rows(symbol, features, bars, names)
    dates, label_dates = rows["date"].to_numpy(), rows["label_date"].to_numpy()
    # Dates are unique and ascending within a symbol, and so are the label dates; a
    # label date is after its row's date, so the rows labelled before a test date are
    # a prefix of the rows: trainable[i] of them for a test block starting at row i.
    trainable = np.searchsorted(label_dates, dates, side="left")
    enough = np.flatnonzero(trainable >= min_train_rows)
    if not enough.size:
        raise NotEnoughHistory(
            f"not enough history to score: walk-forward needs more than {min_train_rows} labelled days "
            f"before its first test date after {WARM_UP_BARS - 1} warm-up bars; {len(bars)} bars give "
            f"{len(rows)} labelled days"
        )
    blocks = [b for b in np.array_split(np.arange(int(enough[0]), len(rows)), n_folds) if len(b)]
    X, y = _design(rows, names)
    actual = rows["actual_up"].to_numpy(dtype=bool)

    folds: list[dict] = []
    prob = np.full(len(rows), np.nan)
    fold_of = np.full(len(rows), -1)
    for number, block in enumerate(blocks):
        first, last = int(block[0]), int(block[-1])
        n_train = int(trainable[first])
        estimator = _fit(make_estimator, X.iloc[:n_train], y.iloc[:n_train])
        prob[first : last + 1] = _prob_up(estimator, X.iloc[first : last + 1])
        fold_of[first : last + 1] = number
        tested = slice(first, last + 1)
        folds.append(
            {
                "symbol": symbol,
                "fold": number,
                "train_start": _iso(dates[0]),
                "train_end": _iso(dates[n_train - 1]),
                "train_label_end": _iso(label_dates[n_train - 1]),
                "train_rows": n_train,
                "test_start": _iso(dates[first]),
                "test_end": _iso(dates[last]),
                **_scores(prob[tested] >= 0.5, actual[tested], prob[tested]),
            }
        )

    tested = slice(int(blocks[0][0]), len(rows))
    predictions = pd.DataFrame(
        {
            "prob_up": prob[tested],
            "predicted_up": prob[tested] >= 0.5,
            "actual_up": actual[tested],
            "baseline_up": rows["baseline_up"].to_numpy(dtype=bool)[tested],
            "fold": fold_of[tested],
        },
        index=X.index[tested],
    )
    final = _fit(make_estimator, X, y)
    classifier = _classifier(final)
    return SymbolModel(
        symbol=symbol,
        training_window={"start": _iso(rows["date"].min()), "end": _iso(rows["date"].max()), "rows": int(len(rows))},
        folds=folds,
        metrics=_out_of_sample_metrics(predictions, f"{symbol}'s model"),
        predictions=predictions,
        estimator=final,
        coefficients=(
            {name: float(c) for name, c in zip(names, np.ravel(classifier.coef_))}
            if hasattr(classifier, "coef_")
            else {}
        ),
        latest_features=latest,
    )


def _model_type(estimators: Sequence[Any]) -> str:
    kinds = sorted({MODEL_TYPE if _is_pipeline(e) else type(e).__name__ for e in estimators})
    return ", ".join(kinds)


def walk_forward(
    features: dict[str, pd.DataFrame],
    bars: dict[str, pd.DataFrame],
    *,
    n_folds: int = 5,
    min_train_rows: int = 120,
    feature_names: Sequence[str] | None = None,
    make_estimator: Callable[[], Any] = default_estimator,
) -> WalkForwardResult:
    """Expanding-window walk-forward of each symbol's own next-day direction model.

    Per symbol, the dates after its first `min_train_rows` usable training rows are cut
    into `n_folds` contiguous test blocks. Each fold's estimator is fitted only on that
    symbol's rows whose date and label date are both before the block's first date;
    the symbol's final model is then fitted on all its labelled rows. A symbol with too
    little history is left out with the reason (`unscored`); overall metrics pool every
    modelled symbol's out-of-sample predictions.
    """
    from threadpoolctl import threadpool_limits

    names = list(feature_names or MODEL_FEATURES)
    missing = sorted(set(features) - set(bars))
    if missing:
        raise ValueError(f"features given for symbols without bars: {missing}")
    modelled: dict[str, SymbolModel] = {}
    unscored: dict[str, str] = {}
    # Dozens of fits on a few hundred rows by ten columns: BLAS threads only add
    # hand-off cost there, and on a busy machine make each fit several times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        for symbol in sorted(features):
            try:
                modelled[symbol] = _walk_forward_symbol(
                    symbol,
                    features[symbol],
                    bars[symbol],
                    names,
                    n_folds=n_folds,
                    min_train_rows=min_train_rows,
                    make_estimator=make_estimator,
                )
            except NotEnoughHistory as exc:
                unscored[symbol] = str(exc)
    if not modelled:
        raise NotEnoughHistory("; ".join(f"{symbol}: {reason}" for symbol, reason in unscored.items()))

    models = list(modelled.values())
    for m in models:
        if m.latest_features.empty:
            last = bars[m.symbol].index[-1].date()
            unscored[m.symbol] = f"the last bar ({last}) has incomplete features: nothing to score"
    latest = [m.latest_features for m in models if not m.latest_features.empty]
    predictions = pd.concat([m.predictions for m in models]).sort_index()
    folds = [fold for m in models for fold in m.folds]
    metrics = {
        **_out_of_sample_metrics(predictions, "The model"),
        "n_folds": len(folds),
        "symbols": sorted(modelled),
        "definitions": {
            "label": "1 when the next bar's close is above this bar's close",
            "accuracy": "share of out-of-sample predictions whose direction was right, all symbols together",
            "precision": "share of predicted-up days on which the close did rise",
            "hit_rate": (
                f"accuracy on the decisive predictions only (P(up) at least {DECISIVE_MARGIN:.2f} "
                "away from 0.5)"
            ),
            "baseline_accuracy": "accuracy of the rule 'up when the 20-day average is above the 50-day'",
            "up_rate": "share of out-of-sample days that closed higher (the always-up accuracy)",
            "n_folds": f"walk-forward folds of all symbols together (up to {n_folds} per symbol)",
            "verdict": "; ".join(f"{name}: {meaning}" for name, meaning in VERDICTS.items()),
        },
    }
    # A symbol whose history only rose falls back to the class prior: describe a real fit.
    described = next((m.estimator for m in models if _is_pipeline(m.estimator)), models[0].estimator)
    params = {
        **_json_params(_classifier(described)),
        "n_folds": n_folds,
        "min_train_rows": min_train_rows,
        "scope": SCOPE,
        "validation": "expanding-window walk-forward split by date, per symbol; a row trains a fold only if "
        "its date and its label's date are before the fold's first test date",
        "decision": "predicted up when P(up) >= 0.5",
    }
    return WalkForwardResult(
        model_type=_model_type([m.estimator for m in models]),
        params=params,
        feature_names=names,
        training_window={
            "start": min(m.training_window["start"] for m in models),
            "end": max(m.training_window["end"] for m in models),
            "rows": sum(m.training_window["rows"] for m in models),
        },
        folds=folds,
        metrics=metrics,
        predictions=predictions,
        models={m.symbol: m.estimator for m in models},
        latest_features=pd.concat(latest) if latest else pd.DataFrame(columns=["date", *names]),
        per_symbol={
            m.symbol: {
                "train_start": m.training_window["start"],
                "train_end": m.training_window["end"],
                "train_rows": m.training_window["rows"],
                **m.metrics,
            }
            for m in models
        },
        coefficients={m.symbol: m.coefficients for m in models if m.coefficients},
        unscored=unscored,
    )


def serialize_model(result: WalkForwardResult) -> bytes:
    """joblib bytes of {"estimators": {symbol: estimator}, "feature_names", "model_type",
    "scope", "training_window", "sklearn_version"}."""
    import joblib
    import sklearn

    buffer = io.BytesIO()
    joblib.dump(
        {
            "estimators": result.models,
            "feature_names": result.feature_names,
            "model_type": result.model_type,
            "scope": result.params.get("scope"),
            "training_window": result.training_window,
            "sklearn_version": sklearn.__version__,
        },
        buffer,
    )
    return buffer.getvalue()
