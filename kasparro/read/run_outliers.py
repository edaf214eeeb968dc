"""Runs whose count or duration is far from their source's recent history: ``run_outlier``.

The robust z-score 0.6745·(x − median)/MAD over the previous finished runs, with the thresholds
every anomaly kind is judged by.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kasparro.models import EtlRun

# 0.6745 is the normal distribution's third quartile: MAD/0.6745 estimates the standard
# deviation. When MAD is 0 (over half the history equal), the mean absolute deviation stands in,
# scaled by sqrt(pi/2) = 1.253314 for the same reason.
MAD_SCALE = 0.6745
MEAN_AD_SCALE = 1.253314
MIN_HISTORY_RUNS = 5  # fewer earlier finished runs (or ANOMALY_HISTORY_RUNS, if less): not judged


@dataclass(frozen=True)
class Thresholds:
    """When a run, a move or a spread is flagged, from the ANOMALY_* settings."""

    mad: float
    history_runs: int
    jump_percent: float
    spread_percent: float

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "Thresholds":
        """Read the thresholds from the app's settings."""
        return cls(
            mad=float(settings["ANOMALY_MAD_THRESHOLD"]),
            history_runs=int(settings["ANOMALY_HISTORY_RUNS"]),
            jump_percent=float(settings["ANOMALY_JUMP_PERCENT"]),
            spread_percent=float(settings["ANOMALY_SPREAD_PERCENT"]),
        )

    def to_dict(self) -> dict[str, float]:
        """Return the thresholds as the API shows them."""
        return {
            "mad": self.mad,
            "history_runs": self.history_runs,
            "jump_percent": self.jump_percent,
            "spread_percent": self.spread_percent,
        }


# --- Robust statistics ----------------------------------------------------------------------


@dataclass(frozen=True)
class RobustScore:
    """How far a value is from a history: the robust z-score and what it was computed from."""

    score: float
    median: float
    mad: float
    mean_absolute_deviation: float
    scale: str  # which spread the score is measured in: "mad", "mean_ad" or "unit"


def robust_score(value: float, history: Sequence[float]) -> RobustScore:
    """Return the robust z-score of ``value`` against ``history`` (not empty).

    0.6745·(x − median)/MAD. When MAD is 0, (x − median)/(1.253314·MeanAD). When both are 0
    the history is constant: MAD is taken as one unit (one row, one millisecond), so a value
    equal to it scores 0 and one that differs by d scores 0.6745·d; the score stays finite.
    """
    median = statistics.median(history)
    deviations = [abs(x - median) for x in history]
    mad = statistics.median(deviations)
    mean_ad = statistics.fmean(deviations)
    if mad:
        score, scale = MAD_SCALE * (value - median) / mad, "mad"
    elif mean_ad:
        score, scale = (value - median) / (MEAN_AD_SCALE * mean_ad), "mean_ad"
    else:
        score, scale = MAD_SCALE * (value - median), "unit"
    return RobustScore(float(score), float(median), float(mad), float(mean_ad), scale)


_SCALE_TEXT = {
    "mad": "MAD {mad:g}",
    "mean_ad": "MAD 0, mean absolute deviation {mean_ad:g}",
    "unit": "constant history, MAD taken as 1",
}


def judge_run(
    run: EtlRun, measure: str, history: Sequence[EtlRun], thresholds: Thresholds
) -> dict[str, Any] | None:
    """Return the anomaly ``run``'s ``measure`` is against ``history``, or None when it is not one.

    A run with fewer than MIN_HISTORY_RUNS earlier finished runs (or ANOMALY_HISTORY_RUNS, when
    smaller) is not judged.
    """
    value = getattr(run, measure)
    values = [getattr(past, measure) for past in history if getattr(past, measure) is not None]
    if value is None or len(values) < min(MIN_HISTORY_RUNS, thresholds.history_runs):
        return None
    scored = robust_score(value, values)
    if abs(scored.score) <= thresholds.mad:
        return None
    spread = _SCALE_TEXT[scored.scale].format(
        mad=scored.mad, mean_ad=scored.mean_absolute_deviation
    )
    return {
        "kind": "run_outlier",
        "source": run.source,
        "at": run.finished_at,
        "score": scored.score,
        "threshold": thresholds.mad,
        "reason": (
            f"{measure} of run {run.id} was {value} against a median of {scored.median:g} over"
            f" the {len(values)} previous finished runs of {run.source} ({spread}):"
            f" robust z-score {scored.score:.2f}, beyond ±{thresholds.mad:g}"
        ),
        "run": {
            "run_id": run.id,
            "status": run.status,
            "measure": measure,
            "value": value,
            "median": scored.median,
            "mad": scored.mad,
            "mean_absolute_deviation": scored.mean_absolute_deviation,
            "scale": scored.scale,
            "history_runs": len(values),
        },
    }


# --- Paging anomalies -----------------------------------------------------------------------
