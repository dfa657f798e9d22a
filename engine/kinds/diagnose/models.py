"""The params and the report blocks of the `diagnose` kind."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from engine.core.kind import StrictParams

SPLITS = ("train", "validation", "test")
Verdict = Literal["overfit", "underfit", "good_fit", "inconclusive"]


class DiagnoseParams(StrictParams):
    task: Literal["classification", "regression"] | None = Field(
        default=None, description="Task hint (default: from the labels: integer/string classes or float values)"
    )
    primary_metric: Literal["accuracy", "macro_f1", "roc_auc", "r2"] | None = Field(
        default=None, description="Higher-is-better metric the gap is measured on (default accuracy / r2)"
    )
    output: str | None = Field(default=None, description="The prediction output (default: the first float output)")
    overfit_relative_gap: float = Field(
        default=0.10,
        gt=0,
        lt=1,
        description="Overfit when the relative gap reaches this and its interval excludes 0: (train - val) / |train| "
        "on accuracy-like metrics; for regression (val RMSE - train RMSE) / the naive baseline's RMSE on validation",
    )
    underfit_gain: float = Field(
        default=0.10,
        ge=0,
        lt=1,
        description="Underfit when the gain over the naive baseline on validation is at most this",
    )
    underfit_train_gain: float = Field(
        default=0.25, ge=0, lt=1, description="...and the gain on train is at most this ('poor on train as well')"
    )
    train_target: float | None = Field(
        default=None, description="Underfit when the primary metric on train is below this target (e.g. 0.95)"
    )
    good_fit_gain: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="good_fit needs positive evidence: the gain over the naive baseline on validation reaches this "
        "(and nothing says underfit: no gain, a train target missed, losses still falling or flat at a low level); "
        "below it, without an underfitting signal, the verdict is inconclusive",
    )
    history_overfit_rise: float = Field(
        default=0.10,
        gt=0,
        description="The history shows overfitting when the validation loss rises past its minimum while the train "
        "loss falls and ends at least this much above the minimum (relative); it decides `overfit` when the gap is "
        "significant (its interval excludes 0) even below overfit_relative_gap, else `inconclusive` (the uploaded "
        "weights may be the best epoch's)",
    )
    min_samples: int = Field(
        default=30,
        ge=2,
        description="A split with fewer samples makes the verdict inconclusive unless the gap's 95% interval lies "
        "wholly above or wholly below overfit_relative_gap (then the intervals decide)",
    )
    bootstrap_resamples: int = Field(default=1000, ge=100, le=20000)
    seed: int = Field(default=0, description="Seed of the bootstrap (same seed and data: same interval)")
    max_samples: int | None = Field(default=20000, ge=1, description="Samples used per split")
    batch_size: int = Field(default=256, ge=1, le=65536)
    threads: int = Field(default=1, ge=1, le=64)
    monitor: str | None = Field(default=None, description="History curve for early stopping (default val_loss)")
    min_delta: float = Field(default=0.0, ge=0, description="EarlyStopping min_delta on the monitored curve")
    patience: int | None = Field(default=None, ge=1, description="EarlyStopping patience (default max(3, epochs/10))")
    weights: bool = Field(default=True, description="Spectral (power-law alpha) analysis of the weight matrices")
    learning_curve: bool = Field(
        default=False,
        description="A data-size learning curve (needs the train extra): the model's architecture re-initialised and "
        "re-trained on learning_curve_sizes of the train split, train and validation metric per size with 95% "
        "intervals: would more data help (high variance) or not (high bias)? It measures the architecture, not the "
        "uploaded weights; refused at submit when its estimate exceeds the job time limit",
    )
    learning_curve_sizes: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default=[0.1, 0.25, 0.5, 1.0],
        min_length=2,
        max_length=8,
        description="Shares of the train split, in (0, 1] (sorted; repeats are dropped)",
    )
    learning_curve_learning_rates: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default=[1e-3, 3e-3, 1e-2],
        min_length=1,
        max_length=5,
        description="Adam learning rates the recipe search tries (on 80% of train, validated on the rest)",
    )
    learning_curve_search_epochs: int = Field(
        default=30, ge=1, le=500, description="At most this many epochs per searched rate (early stopping, patience 5)"
    )
    learning_curve_epochs: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Epochs at full size (default: the history's best epoch, else the search's); smaller shares run "
        "the same number of optimizer steps",
    )
    learning_curve_batch_size: int = Field(default=32, ge=1, le=65536)

    @field_validator("learning_curve_sizes")
    @classmethod
    def _shares(cls, sizes: list[float]) -> list[float]:
        return sorted(set(sizes))


class SplitResult(BaseModel):
    samples: int
    metrics: dict[str, float | None]
    baseline_metrics: dict[str, float | None] = Field(description="The naive model fitted on train, on this split")
    gain: float | None = Field(description="(model - baseline) / (perfect - baseline) on the primary metric")
    primary_ci95: list[float] | None = Field(default=None, description="Bootstrap 95% interval of the primary metric")
    per_class_recall: dict[str, float] | None = None
    predicted_classes: int | None = Field(default=None, description="Distinct classes the model predicts here")


class Gap(BaseModel):
    metric: str = Field(description="The metric the gap is measured on: the primary, or rmse for regression")
    lower_is_better: bool = Field(default=False, description="A loss (rmse): the gap is validation - train")
    absolute: float = Field(description="How much worse validation is: train - validation (a loss: val - train)")
    relative: float | None = Field(
        description="(train - validation) / |train|; for regression's RMSE (validation - train) / the naive "
        "baseline's RMSE on validation (the labels' spread)"
    )
    absolute_ci95: list[float] | None
    relative_ci95: list[float] | None
    resamples: int
    p_value: float | None = Field(default=None, description="Two-proportion z-test, train vs validation accuracy")
    test_absolute: float | None = Field(default=None, description="How much worse test is than train, if given")


class Evidence(BaseModel):
    code: str
    points_to: Literal["overfit", "underfit", "good_fit", "inconclusive", "none"]
    text: str


class Remedy(BaseModel):
    action: str
    why: str = Field(description="The evidence that calls for it")
    evidence: list[str] = Field(default_factory=list, description="Codes of the evidence items that support it")
    setting: dict[str, Any] = Field(default_factory=dict, description="Concrete values where they can be derived")
    code: str | None = Field(default=None, description="Ready-to-paste code, e.g. a Keras EarlyStopping")
