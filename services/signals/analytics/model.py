"""Next-day direction model, validated walk-forward across a pool of symbols.

Every row is one (symbol, date) with features known at that date's close; its label
is whether the symbol's next bar closes higher, so the label becomes known at the
next bar's date. Folds are split by date and train on an expanding window that keeps
only rows whose label date is before the fold's first test date: neither a training
row nor its outcome can come from the period being predicted.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from services.signals.analytics.features import MODEL_FEATURES

RANDOM_STATE = 0
# A prediction this far from a coin flip counts as a call; hit_rate scores only those.
DECISIVE_MARGIN = 0.05

MODEL_TYPE = "LogisticRegression (StandardScaler pipeline)"


def default_estimator() -> Pipeline:
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("classifier", LogisticRegression(C=1.0, max_iter=1000, random_state=RANDOM_STATE)),
        ]
    )


@dataclass(frozen=True)
class WalkForwardResult:
    model_type: str
    params: dict
    feature_names: list[str]
    training_window: dict
    folds: list[dict]
    metrics: dict
    predictions: pd.DataFrame
    model: object
    latest_features: pd.DataFrame = field(repr=False)
    coefficients: dict[str, float] = field(default_factory=dict)

    def latest_probabilities(self) -> dict[str, float]:
        """Symbol -> P(next close higher) for each symbol's last bar (which has no label yet)."""
        if self.latest_features.empty:
            return {}
        proba = _prob_up(self.model, self.latest_features[self.feature_names])
        return {symbol: float(p) for symbol, p in zip(self.latest_features.index, proba)}

    def latest_dates(self) -> dict[str, str]:
        """Symbol -> ISO date of the bar latest_probabilities() scores."""
        return {s: d.date().isoformat() for s, d in self.latest_features["date"].items()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready description for the model artifact (everything but the estimator and rows)."""
        return {
            "model_type": self.model_type,
            "params": self.params,
            "feature_names": self.feature_names,
            "training_window": self.training_window,
            "folds": self.folds,
            "metrics": self.metrics,
            "coefficients": self.coefficients,
        }


def _labelled_rows(
    features: dict[str, pd.DataFrame],
    bars: dict[str, pd.DataFrame],
    feature_names: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pool rows with complete features: (rows with a known label, each symbol's last row)."""
    labelled, latest = [], []
    for symbol in sorted(features):
        close = bars[symbol]["close"].astype(float)
        frame = features[symbol].reindex(close.index)
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
        has_label = complete["label_date"].notna()
        labelled.append(complete[has_label])
        last = rows.iloc[[-1]]
        if not last[feature_names].isna().any(axis=None):
            latest.append(last)
    columns = ["symbol", "date", "label_date", "actual_up", "baseline_up", *feature_names]
    pooled = pd.concat(labelled, ignore_index=True) if labelled else pd.DataFrame(columns=columns)
    pooled = pooled.sort_values(["date", "symbol"], ignore_index=True)
    last_rows = (
        pd.concat(latest).set_index("symbol")[["date", *feature_names]]
        if latest
        else pd.DataFrame(columns=["date", *feature_names])
    )
    return pooled, last_rows


def _design(rows: pd.DataFrame, feature_names: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    # The (symbol, date) index travels into fit/predict so an instrumented estimator
    # can see exactly which dates it was given.
    index = pd.MultiIndex.from_arrays([rows["symbol"], rows["date"]], names=["symbol", "date"])
    X = pd.DataFrame(rows[feature_names].to_numpy(dtype=float), index=index, columns=feature_names)
    y = pd.Series(rows["actual_up"].to_numpy(dtype=int), index=index, name="actual_up")
    return X, y


def _fit(make_estimator: Callable[[], Any], X: pd.DataFrame, y: pd.Series) -> Any:
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


def _scores(predicted: pd.Series, actual: pd.Series, prob: pd.Series) -> dict[str, Any]:
    n = int(len(actual))
    predicted_up = int(predicted.sum())
    decisive = (prob - 0.5).abs() >= DECISIVE_MARGIN
    return {
        "accuracy": float((predicted == actual).mean()) if n else None,
        "precision": float((predicted & actual).sum() / predicted_up) if predicted_up else None,
        "hit_rate": float((predicted[decisive] == actual[decisive]).mean()) if decisive.any() else None,
        "n": n,
        "n_decisive": int(decisive.sum()),
    }


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


def walk_forward(
    features: dict[str, pd.DataFrame],
    bars: dict[str, pd.DataFrame],
    *,
    n_folds: int = 5,
    min_train_rows: int = 120,
    feature_names: Sequence[str] | None = None,
    make_estimator: Callable[[], Any] = default_estimator,
) -> WalkForwardResult:
    """Expanding-window walk-forward of the pooled next-day direction model.

    The dates after the first `min_train_rows` usable training rows are cut into
    `n_folds` contiguous test blocks. Each fold's estimator is fitted only on rows
    whose date and label date are both before the block's first date; the final
    model is then fitted on every labelled row.
    """
    names = list(feature_names or MODEL_FEATURES)
    missing = sorted(set(features) - set(bars))
    if missing:
        raise ValueError(f"features given for symbols without bars: {missing}")
    rows, latest = _labelled_rows(features, bars, names)
    if rows.empty:
        raise ValueError("no rows with complete features and a known next-day label")

    dates = np.sort(rows["date"].unique())
    # Rows available to train a fold starting at each date: those labelled before it.
    trainable = np.searchsorted(np.sort(rows["label_date"].to_numpy()), dates, side="left")
    enough = np.flatnonzero(trainable >= min_train_rows)
    first_test = int(enough[0]) if enough.size else None
    if first_test is None:
        raise ValueError(
            f"not enough history for walk-forward: {len(rows)} labelled rows, "
            f"need more than min_train_rows={min_train_rows} before the first test date"
        )
    blocks = [b for b in np.array_split(dates[first_test:], n_folds) if len(b)]

    folds: list[dict] = []
    predicted_blocks: list[pd.DataFrame] = []
    for number, block in enumerate(blocks):
        test_start, test_end = block[0], block[-1]
        train = rows[(rows["date"] < test_start) & (rows["label_date"] < test_start)]
        test = rows[(rows["date"] >= test_start) & (rows["date"] <= test_end)]
        estimator = _fit(make_estimator, *_design(train, names))
        X_test, y_test = _design(test, names)
        prob = pd.Series(_prob_up(estimator, X_test), index=X_test.index)
        out = pd.DataFrame(
            {
                "prob_up": prob,
                "predicted_up": prob >= 0.5,
                "actual_up": y_test.astype(bool),
                "baseline_up": test["baseline_up"].to_numpy(dtype=bool),
                "fold": number,
            },
            index=X_test.index,
        )
        predicted_blocks.append(out)
        folds.append(
            {
                "fold": number,
                "train_start": _iso(train["date"].min()),
                "train_end": _iso(train["date"].max()),
                "train_label_end": _iso(train["label_date"].max()),
                "train_rows": int(len(train)),
                "test_start": _iso(test_start),
                "test_end": _iso(test_end),
                **_scores(out["predicted_up"], out["actual_up"], out["prob_up"]),
            }
        )

    predictions = pd.concat(predicted_blocks).sort_index()
    scores = _scores(predictions["predicted_up"], predictions["actual_up"], predictions["prob_up"])
    baseline = _scores(predictions["baseline_up"], predictions["actual_up"], predictions["baseline_up"].astype(float))
    metrics = {
        "accuracy": scores["accuracy"],
        "precision": scores["precision"],
        "hit_rate": scores["hit_rate"],
        "n_predictions": scores["n"],
        "n_decisive": scores["n_decisive"],
        "baseline_accuracy": baseline["accuracy"],
        "baseline_precision": baseline["precision"],
        "up_rate": float(predictions["actual_up"].mean()),
        "n_folds": len(folds),
        "symbols": sorted(predictions.index.get_level_values("symbol").unique()),
        "definitions": {
            "label": "1 when the next bar's close is above this bar's close",
            "accuracy": "share of out-of-sample predictions whose direction was right",
            "precision": "share of predicted-up days on which the close did rise",
            "hit_rate": (
                f"accuracy on the decisive predictions only (P(up) at least {DECISIVE_MARGIN:.2f} "
                "away from 0.5)"
            ),
            "baseline_accuracy": "accuracy of the rule 'up when the 20-day average is above the 50-day'",
            "up_rate": "share of out-of-sample days that closed higher (the always-up accuracy)",
        },
    }

    X_all, y_all = _design(rows, names)
    final = _fit(make_estimator, X_all, y_all)
    classifier = final.steps[-1][1] if isinstance(final, Pipeline) else final
    coefficients = (
        {name: float(c) for name, c in zip(names, np.ravel(classifier.coef_))}
        if hasattr(classifier, "coef_")
        else {}
    )
    params = {
        **_json_params(classifier),
        "n_folds": n_folds,
        "min_train_rows": min_train_rows,
        "validation": "expanding-window walk-forward split by date; a row trains a fold only if "
        "its date and its label's date are before the fold's first test date",
        "decision": "predicted up when P(up) >= 0.5",
    }
    return WalkForwardResult(
        model_type=MODEL_TYPE if isinstance(final, Pipeline) else type(final).__name__,
        params=params,
        feature_names=names,
        training_window={
            "start": _iso(rows["date"].min()),
            "end": _iso(rows["date"].max()),
            "rows": int(len(rows)),
        },
        folds=folds,
        metrics=metrics,
        predictions=predictions,
        model=final,
        latest_features=latest,
        coefficients=coefficients,
    )


def serialize_model(result: WalkForwardResult) -> bytes:
    """joblib bytes of {"estimator", "feature_names", "model_type", "training_window", "sklearn_version"}."""
    buffer = io.BytesIO()
    joblib.dump(
        {
            "estimator": result.model,
            "feature_names": result.feature_names,
            "model_type": result.model_type,
            "training_window": result.training_window,
            "sklearn_version": sklearn.__version__,
        },
        buffer,
    )
    return buffer.getvalue()
