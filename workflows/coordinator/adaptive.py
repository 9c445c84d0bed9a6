"""Cost-aware adaptive retraining: retrain when keeping the serving model is expected to cost
more than retraining it.

Pure and deterministic (standard library and pydantic only: it runs inside Temporal's workflow
sandbox, and the offline simulator and the decision-quality benchmark drive the same class).

Usage, by any prequential harness (one call per batch of served, then labelled, traffic):

    policy = AdaptivePolicy(
        AdaptiveConfig(value_per_loss=2.0, retraining_cost=350.0, retraining_overhead=30.0,
                       currency="EUR", training_batches=30)
    )
    policy.observe(loss_sum=61.0, count=500, volume=20_000)   # the serving model's batch
    decision = policy.decide()
    if decision.retrain:
        ...                                                    # train, evaluate, deploy
        policy.retrained(version="8", holdout_loss=0.11, holdout_count=2_000)
    decision.reason  # "retrain v7: excess loss since v7: 412 EUR; expected excess cost ..."

`policy.state` is a small pydantic model (bounded by `memory` and `fresh_history`) to carry
through continue-as-new: `AdaptivePolicy(config, state)` resumes. `decision.numbers()` are the
flat numbers for a decision log, search attributes or metrics.

The rule. Money is loss x `value_per_loss` x traffic (`volume` per batch); a retraining costs
`retraining_cost` + `retraining_overhead`. The policy keeps the serving model's recent batch
losses and forecasts what keeping it would cost over what retraining would, at the *lower
confidence bound* of the loss gap (so sampling noise alone does not fire it), three ways:

- **degradation**: a recent stretch of the last k batches (k = 1, 2, 3, 4, 6, 8, 12, ...)
  against the same model's loss before it. A model that was good for h batches and is now worse
  by d per prediction is expected, once replaced, to be good for about as long again: the
  forecast saving is d x h (the optimal-replacement rule of renewal theory: replace when the
  current excess rate times the model's life exceeds the retraining cost plus what it already
  cost).
- **excess over a fresh model**: a stretch against what fresh models achieve: the lowest upper
  confidence bound among the last `fresh_history` models' fresh levels (each candidate's
  holdout loss when the harness reports one, and each model's loss over its first
  `early_batches` batches) - a level some recent model demonstrably reached, so a model trained
  across a change, bad from its first batch, does not lower the bar. An excess that has lasted
  k batches is expected to last about as long again: the forecast is the excess already paid
  (the break-even, or ski-rental, rule: 2-competitive whatever the future).
- **steady drift**: how fast models' loss grows with their age, pooled over the last models
  (within-model regression slopes, up to the change that ended each). With a loss growing by s
  per batch of age, the excess paid by age a is s a^2 / 2, and retraining when it reaches the
  cost is the cost-optimal period sqrt(2 C / s): learnt across models, it fires before the
  serving model's own evidence alone would.

It retrains when the largest forecast reaches the retraining cost. The lower bound is one-sided
at `confidence`, Bonferroni-corrected over the stretches tried; the variance is binomial-like
(losses in [0, loss_bound]) or from `loss_sq_sum`, inflated by the batch-to-batch dispersion the
model actually shows (a robust estimate from successive differences), so day-to-day variation
that is not drift does not fire it. A dearer retraining needs a larger or longer-lasting excess.

When retrainings learn from the last `training_batches` batches (a sliding window), a
retraining right after an abrupt change mostly learns the old regime. If a step (rather than a
steady trend: BIC of the two fits) explains the losses, the policy plans the cheapest schedule
of retrainings until the window is clean (dynamic programming, the excess of a model trained a
batches into the change taken to shrink in proportion to a / training_batches) and waits when
that schedule's first retraining is later: with a dear retraining it retrains once, on the new
regime; with a cheap one at once and again later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist, median
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from workflows.common.models import StateModel, StrictModel

NonNegative = Annotated[float, Field(ge=0)]
# The median of a chi-square with one degree of freedom: squared standard normal deviates have
# this median, so median(z^2) / CHI2_1_MEDIAN estimates the variance inflation.
CHI2_1_MEDIAN = 0.454936
# Stretches up to this many batches are all tried; longer ones on a geometric grid.
FINE_STRETCHES = 4
# Prior weight (in successive differences) of "no overdispersion" in the dispersion estimate.
MIN_DIFFERENCES = 16


class AdaptiveConfig(StrictModel):
    """What the adaptive policy needs; validated at the edge (the model spec, the CLI)."""

    # Money per unit of loss per prediction (e.g. per error for the 0/1 loss).
    value_per_loss: Annotated[float, Field(gt=0)]
    # The backend's cost estimate for one retraining (its real cost when known), plus the fixed
    # overhead of a retraining (evaluation, review, rollout, risk).
    retraining_cost: NonNegative
    retraining_overhead: NonNegative = 0.0
    currency: Annotated[str, Field(min_length=1, max_length=16)] = "USD"
    # One-sided confidence of the lower bound on the loss gap.
    confidence: Annotated[float, Field(ge=0.5, lt=1)] = 0.99
    # Losses are in [0, loss_bound] (1 for the 0/1 loss): bounds the variance when the harness
    # does not report sums of squared losses.
    loss_bound: Annotated[float, Field(gt=0)] = 1.0
    # Recent batches kept per model: the longest stretch tried.
    memory: Annotated[int, Field(ge=4, le=256)] = 64
    # Batches after a retraining whose loss measures what a fresh model achieves.
    early_batches: Annotated[int, Field(ge=1, le=32)] = 3
    # Models whose fresh levels are kept (the lowest upper bound among them is the reference;
    # also how many models the steady-drift rate is pooled over).
    fresh_history: Annotated[int, Field(ge=1, le=64)] = 8
    # Longest forecast, in batches (None: as long as the evidence says).
    max_horizon: Annotated[int, Field(ge=1)] | None = None
    # How many recent batches a retraining learns from (its data window in decision periods).
    # Known, the policy waits after a change until a retraining would learn the new regime,
    # when that is cheaper than retraining twice. None: retrainings learn the new regime only.
    training_batches: Annotated[int, Field(ge=1, le=1000)] | None = None

    @property
    def total_retraining_cost(self) -> float:
        return self.retraining_cost + self.retraining_overhead


class Pool(StateModel):
    """Sums over some batches of one model's labelled traffic."""

    batches: int = 0
    loss: NonNegative = 0.0
    count: int = 0
    volume: NonNegative = 0.0
    # Sum of squared losses; None once a batch came without it.
    loss_sq: NonNegative | None = 0.0

    @property
    def rate(self) -> float:
        return self.loss / self.count if self.count else 0.0

    def add(self, other: Pool) -> None:
        self.batches += other.batches
        self.loss += other.loss
        self.count += other.count
        self.volume += other.volume
        self.loss_sq = (
            None if self.loss_sq is None or other.loss_sq is None else self.loss_sq + other.loss_sq
        )

    def minus(self, other: Pool) -> Pool:
        # model_construct: sums of validated numbers, on the decision's hot path.
        return Pool.model_construct(
            batches=self.batches - other.batches,
            loss=max(0.0, self.loss - other.loss),
            count=self.count - other.count,
            volume=max(0.0, self.volume - other.volume),
            loss_sq=None
            if self.loss_sq is None or other.loss_sq is None
            else max(0.0, self.loss_sq - other.loss_sq),
        )


class FreshLevel(StateModel):
    """What one model achieved fresh: its candidate's holdout loss (when reported) and its loss
    per prediction over its first `early_batches` batches."""

    version: str | None = None
    holdout_loss: NonNegative | None = None
    holdout_count: int = 0
    early_loss: NonNegative | None = None
    early_count: int = 0


class Trend(StateModel):
    """Weighted regression sums of one model's batch losses against its age (in batches)."""

    w: NonNegative = 0.0
    wt: NonNegative = 0.0
    wx: NonNegative = 0.0
    wtt: NonNegative = 0.0
    wtx: NonNegative = 0.0

    def centred(self) -> tuple[float, float]:
        """(sum of w (t - t_mean)(x - x_mean), sum of w (t - t_mean)^2)."""
        if self.w <= 0:
            return 0.0, 0.0
        return self.wtx - self.wt * self.wx / self.w, max(0.0, self.wtt - self.wt**2 / self.w)


class AdaptiveState(StateModel):
    """Everything the policy remembers; bounded by `memory` and `fresh_history`."""

    version: str | None = None
    retrainings: int = 0
    observed: int = 0
    # Since the last retraining: every batch, the first `early_batches`, the last `memory`.
    cycle: Pool = Pool()
    early: Pool = Pool()
    early_recorded: bool = False
    recent: list[Pool] = []
    fresh: list[FreshLevel] = []
    # Squared standardised differences of successive batch losses (same model), last `memory`.
    spreads: list[NonNegative] = []
    # How old the change a retraining answers was when it was asked for, and when the serving
    # model was trained (None: not a change, or unknown).
    pending_change_age: int | None = None
    trained_change_age: int | None = None
    # How the last `fresh_history` models' losses grew with their age (up to the change that
    # ended them, when one did).
    trends: list[Trend] = []


Basis = Literal["degradation", "excess_over_fresh", "steady_drift", "none"]


class AdaptiveDecision(StrictModel):
    """One decision with the numbers behind it (money in the config's currency, losses per
    labelled prediction)."""

    retrain: bool
    reason: str
    basis: Basis
    # The largest lower-bound forecast of what keeping the model costs over the alternative.
    expected_excess_cost: float
    retraining_cost: float
    currency: str
    version: str | None
    model_batches: int
    segment_batches: int = 0
    horizon_batches: int = 0
    current_loss: float | None = None
    reference_loss: float | None = None
    fresh_loss: float | None = None
    excess_loss: float | None = None
    excess_loss_lower: float | None = None
    # Excess over the fresh-model loss since the last retraining, in money (point estimate).
    realized_excess_cost: float | None = None
    # Batches since the change behind the excess began, and how long the policy waits for a
    # training window clean of the old regime (0: it does not wait).
    change_age_batches: int | None = None
    wait_batches: int = 0
    confidence: float
    z: float = 0.0
    dispersion: float = 1.0

    def numbers(self) -> dict[str, float | int | str | bool | None]:
        """Flat numbers for a decision log, search attributes or metrics."""
        return {
            key: value
            for key, value in self.model_dump().items()
            if key not in ("reason",) and not isinstance(value, dict | list)
        }


class BatchLoss(StrictModel):
    """One served batch as reported to `observe` (validated: a harness's bug is an error)."""

    loss_sum: NonNegative
    count: Annotated[int, Field(ge=0)]
    volume: NonNegative | None = None
    loss_sq_sum: NonNegative | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.count == 0 and self.loss_sum > 0:
            raise ValueError("a batch without labelled predictions cannot have a loss")
        return self


def _grid(limit: int) -> list[int]:
    """Stretch lengths 1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to `limit`, and `limit` itself
    (a finer grid dates changes better but costs more in the multiple-testing correction)."""
    lengths = set(range(1, min(limit, FINE_STRETCHES) + 1))
    step = FINE_STRETCHES
    while step <= limit:
        lengths.add(step)
        if step + step // 2 <= limit:
            lengths.add(step + step // 2)
        step *= 2
    if limit >= 1:
        lengths.add(limit)
    return sorted(lengths)


class AdaptivePolicy:
    """See the module docstring. Not thread-safe; one instance per model."""

    def __init__(self, config: AdaptiveConfig, state: AdaptiveState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else AdaptiveState()

    # ------------------------------------------------------------------ inputs

    def observe(
        self,
        loss_sum: float,
        count: int,
        volume: float | None = None,
        loss_sq_sum: float | None = None,
    ) -> None:
        """The serving model's batch: total loss over `count` labelled predictions, out of
        `volume` predictions served (default: `count`). A batch without labels is ignored."""
        batch = BatchLoss(loss_sum=loss_sum, count=count, volume=volume, loss_sq_sum=loss_sq_sum)
        if batch.loss_sq_sum is None and batch.loss_sum > self.config.loss_bound * batch.count:
            raise ValueError(
                f"mean loss {batch.loss_sum / batch.count:.4g} exceeds loss_bound "
                f"{self.config.loss_bound:g}: raise loss_bound or report loss_sq_sum"
            )
        if batch.count == 0:
            return
        pool = Pool(
            batches=1,
            loss=batch.loss_sum,
            count=batch.count,
            volume=batch.volume if batch.volume is not None else float(batch.count),
            loss_sq=batch.loss_sq_sum,
        )
        state, config = self.state, self.config
        if state.recent:
            previous = state.recent[-1]
            variance = self._variance(_pooled([previous, pool]))
            scale = variance / previous.count + variance / pool.count
            if scale > 0:
                state.spreads.append((pool.rate - previous.rate) ** 2 / scale)
                del state.spreads[: -config.memory]
        state.observed += 1
        state.cycle.add(pool)
        state.recent.append(pool)
        del state.recent[: -config.memory]
        if not state.early_recorded:
            state.early.add(pool)
            if state.early.batches >= config.early_batches:
                self._record_early()

    def retrained(
        self,
        version: str | None = None,
        holdout_loss: float | None = None,
        holdout_count: int | None = None,
    ) -> None:
        """A new model serves from now on. `holdout_loss` (per prediction, over
        `holdout_count` labelled rows) is the candidate's evaluation, if the harness has one."""
        state = self.state
        if holdout_loss is not None:
            if holdout_count is None or holdout_count < 1:
                raise ValueError("holdout_loss needs holdout_count >= 1")
            if not (math.isfinite(holdout_loss) and 0 <= holdout_loss <= self.config.loss_bound):
                raise ValueError(f"holdout loss {holdout_loss:g} is not in [0, loss_bound]")
        if not state.early_recorded and state.early.batches:
            self._record_early()
        steady = state.recent
        if state.pending_change_age is not None:
            steady = steady[: max(0, len(steady) - state.pending_change_age)]
        if len(steady) >= 3:
            state.trends.append(self._trend(steady, self._dispersion()))
            del state.trends[: -self.config.fresh_history]
        state.fresh.append(
            FreshLevel(
                version=version,
                holdout_loss=holdout_loss,
                holdout_count=holdout_count if holdout_loss is not None else 0,
            )
        )
        del state.fresh[: -self.config.fresh_history]
        state.version = version
        state.trained_change_age = state.pending_change_age
        state.pending_change_age = None
        state.retrainings += 1
        state.cycle = Pool()
        state.early = Pool()
        state.early_recorded = False
        state.recent = []

    # ------------------------------------------------------------------ the decision

    def decide(self, retraining_cost: float | None = None) -> AdaptiveDecision:
        """Retrain now? `retraining_cost` overrides the configured estimate for this decision
        (the overhead is added to it)."""
        config, state = self.config, self.state
        if retraining_cost is not None and not (
            math.isfinite(retraining_cost) and retraining_cost >= 0
        ):
            raise ValueError(f"retraining_cost must be a finite number >= 0, got {retraining_cost}")
        cost = (
            config.total_retraining_cost
            if retraining_cost is None
            else retraining_cost + config.retraining_overhead
        )
        name = f"v{state.version}" if state.version else "the serving model"
        age = state.cycle.batches
        if age == 0:
            return AdaptiveDecision(
                retrain=False,
                reason=f"keep {name}: no labelled traffic since it was deployed",
                basis="none",
                expected_excess_cost=0.0,
                retraining_cost=cost,
                currency=config.currency,
                version=state.version,
                model_batches=0,
                confidence=config.confidence,
            )

        dispersion = self._dispersion()
        fresh = self._fresh()
        recent = state.recent
        lengths = _grid(len(recent))
        tests = (
            sum(1 for k in lengths if age - k >= 1)
            + (len(lengths) if fresh else 0)
            + (1 if state.trends else 0)
        )
        alpha = (1 - config.confidence) / max(tests, 1)
        z = NormalDist().inv_cdf(1 - alpha)
        per_batch = config.value_per_loss * _mean_volume(recent)

        best: _Candidate | None = None
        tried: list[_Candidate] = []
        for k in lengths:
            segment = _pooled(recent[-k:])
            variance = self._variance(segment) * dispersion / segment.count
            before = state.cycle.minus(segment)
            found: list[_Candidate] = []
            if before.batches >= 1 and before.count > 0:
                gap_variance = variance + self._variance(before) * dispersion / before.count
                found.append(
                    _Candidate(
                        "degradation",
                        k,
                        before.batches,
                        segment.rate,
                        before.rate,
                        gap_variance,
                        change_age=k,
                    )
                )
            if fresh is not None:
                # An excess present from the model's first batch: it was trained across a
                # change (if the retraining that made it answered one) or is a poor fit.
                if k < age:
                    onset: int | None = k
                elif state.trained_change_age is not None:
                    onset = state.trained_change_age + age
                else:
                    onset = None  # a poor fit, or a change before its training: unknown
                found.append(
                    _Candidate(
                        "excess_over_fresh",
                        k,
                        k,
                        segment.rate,
                        fresh[0],
                        variance,
                        change_age=onset,
                        trained_age=state.trained_change_age if k >= age else None,
                    )
                )
            for candidate in found:
                if config.max_horizon is not None:
                    candidate.horizon = min(candidate.horizon, config.max_horizon)
                candidate.lower = candidate.gap - z * math.sqrt(candidate.gap_variance)
                candidate.forecast = max(0.0, candidate.lower) * candidate.horizon * per_batch
                tried.append(candidate)
                if best is None or (candidate.forecast, candidate.gap) > (best.forecast, best.gap):
                    best = candidate

        drift = self._drift(dispersion)
        if drift is not None and age >= 2:
            slope, slope_variance = drift
            start = recent[0].rate if recent else state.cycle.rate
            candidate = _Candidate(
                "steady_drift",
                age,
                age,
                start + slope * age,
                start,
                slope_variance * age * age,
                change_age=None,
            )
            candidate.lower = candidate.gap - z * math.sqrt(candidate.gap_variance)
            # Excess growing linearly with age: retraining at age a costs C + slope a^2 / 2 per
            # cycle of a batches, least when slope a^2 / 2 = C (optimal replacement).
            candidate.forecast = max(0.0, candidate.lower) * age / 2 * per_batch
            if best is None or (candidate.forecast, candidate.gap) > (best.forecast, best.gap):
                best = candidate

        if best is None:  # one batch and no fresh-model estimate yet: nothing to compare with
            rate = state.cycle.rate
            best = _Candidate("none", age, 0, rate, rate, 0.0, change_age=None)
        else:
            # When the change began: the split the evidence favours most (largest standardised
            # gap, the likelihood-ratio change point); a gradual change keeps its largest gap,
            # hence the largest forecast, in the last batches.
            same = [c for c in tried if c.basis == best.basis and c.lower > 0]
            if same:
                best.change_age = max(
                    same, key=lambda c: c.gap / math.sqrt(c.gap_variance or 1e-300)
                ).change_age
        realized = (
            (state.cycle.loss - fresh[0] * state.cycle.count)
            * config.value_per_loss
            * (state.cycle.volume / state.cycle.count)
            if fresh is not None and state.cycle.count
            else None
        )
        wait = 0
        if (
            best.forecast >= cost
            and best.forecast > 0
            and config.training_batches is not None
            and best.change_age is not None
            and best.change_age < config.training_batches
            and (best.trained_age is not None or self._abrupt(best.change_age, dispersion))
        ):
            wait = _wait(
                excess=max(0.0, best.lower) * per_batch,
                horizon=best.horizon,
                cost=cost,
                change_age=best.change_age,
                trained_age=best.trained_age,
                window=config.training_batches,
            )
        retrain = best.forecast >= cost and best.forecast > 0 and wait == 0
        state.pending_change_age = best.change_age if retrain else None
        reason = _reason(
            retrain,
            name,
            config.currency,
            best,
            cost,
            realized,
            config.confidence,
            age,
            wait,
        )
        return AdaptiveDecision(
            retrain=retrain,
            reason=reason,
            basis=best.basis if best.forecast > 0 else "none",
            expected_excess_cost=round(best.forecast, 6),
            retraining_cost=cost,
            currency=config.currency,
            version=state.version,
            model_batches=age,
            segment_batches=best.segment,
            horizon_batches=best.horizon,
            current_loss=best.current,
            reference_loss=best.reference,
            fresh_loss=fresh[0] if fresh is not None else None,
            excess_loss=best.gap,
            excess_loss_lower=best.lower,
            realized_excess_cost=None if realized is None else round(realized, 6),
            change_age_batches=best.change_age,
            wait_batches=wait,
            confidence=config.confidence,
            z=z,
            dispersion=dispersion,
        )

    # ------------------------------------------------------------------ estimates

    def _variance(self, pool: Pool) -> float:
        """Variance of one prediction's loss: from the squares when known, else the largest a
        loss in [0, loss_bound] with this mean can have (Bernoulli for the 0/1 loss)."""
        if pool.count == 0:
            return 0.0
        mean = pool.rate
        if pool.loss_sq is not None and pool.loss_sq > 0:
            return max(pool.loss_sq / pool.count - mean * mean, 0.0)
        bound = self.config.loss_bound
        # Never exactly 0: a model with no error yet is not proof of a perfect one.
        floor = bound * bound / (4 * (pool.count + 1))
        return max(mean * (bound - mean), floor)

    def _trend(self, pools: list[Pool], dispersion: float) -> Trend:
        w = wt = wx = wtt = wtx = 0.0
        for age, pool in enumerate(pools):
            weight = pool.count / max(self._variance(pool) * dispersion, 1e-12)
            rate = pool.rate
            w += weight
            wt += weight * age
            wx += weight * rate
            wtt += weight * age * age
            wtx += weight * age * rate
        return Trend(w=w, wt=wt, wx=wx, wtt=wtt, wtx=wtx)

    def _drift(self, dispersion: float) -> tuple[float, float] | None:
        """How fast models' loss grows with age (per batch) and the variance of that estimate:
        the within-model regression slopes of the last models and the serving one, pooled."""
        state = self.state
        if not state.trends:
            return None
        sums = [t.centred() for t in state.trends]
        if len(state.recent) >= 2:
            sums.append(self._trend(state.recent, dispersion).centred())
        spread = sum(q for _, q in sums)
        if spread <= 0:
            return None
        return sum(c for c, _ in sums) / spread, 1.0 / spread

    def _abrupt(self, change_age: int, dispersion: float) -> bool:
        """Does a step `change_age` batches ago explain the serving model's batch losses better
        than a steady trend does (BIC, the split counted as one more parameter)? A step leaves
        old-regime data in the training window for a while; a steady drift never gets cleaner
        by waiting. Too few batches to tell: a step."""
        recent = self.state.recent
        points = len(recent)
        if points < 4 or change_age >= points:
            return True
        rates = [pool.rate for pool in recent]
        weights = [pool.count / max(self._variance(pool) * dispersion, 1e-12) for pool in recent]

        def chi2(indices: range, fit: list[float]) -> float:
            return sum(weights[i] * (rates[i] - fit[n]) ** 2 for n, i in enumerate(indices))

        def mean(indices: range) -> float:
            return sum(weights[i] * rates[i] for i in indices) / sum(weights[i] for i in indices)

        split = points - change_age
        before, after = range(split), range(split, points)
        step = chi2(before, [mean(before)] * len(before)) + chi2(after, [mean(after)] * len(after))
        total = sum(weights)
        centre = sum(w * t for t, w in enumerate(weights)) / total
        level = sum(w * x for w, x in zip(weights, rates, strict=True)) / total
        spread = sum(w * (t - centre) ** 2 for t, w in enumerate(weights))
        slope = (
            sum(
                w * (t - centre) * (x - level)
                for t, (w, x) in enumerate(zip(weights, rates, strict=True))
            )
            / spread
        )
        trend = chi2(range(points), [level + slope * (t - centre) for t in range(points)])
        return trend - step > math.log(points)

    def _dispersion(self) -> float:
        """Variance inflation for batch-to-batch variation beyond sampling: the robust estimate,
        shrunk towards 1 as if `MIN_DIFFERENCES` more differences had shown none (a median of
        a few squared deviates is itself very noisy)."""
        spreads = self.state.spreads
        if not spreads:
            return 1.0
        estimate = median(spreads) / CHI2_1_MEDIAN
        weight = len(spreads) / (len(spreads) + MIN_DIFFERENCES)
        return max(1.0, 1.0 + (estimate - 1.0) * weight)

    def _bound(self, loss: float, count: int, z: float) -> float:
        pool = Pool(batches=1, loss=loss * count, count=count, loss_sq=None)
        return loss + z * math.sqrt(self._variance(pool) / count)

    def _level_bound(self, level: FreshLevel, z: float) -> float | None:
        bounds = [
            self._bound(loss, count, z)
            for loss, count in (
                (level.holdout_loss, level.holdout_count),
                (level.early_loss, level.early_count),
            )
            if loss is not None and count > 0
        ]
        return min(bounds) if bounds else None

    def _fresh(self, levels: list[FreshLevel] | None = None) -> tuple[float, float] | None:
        """The loss a fresh model achieves: the lowest upper confidence bound among the kept
        models' fresh levels (a level some recent fresh model demonstrably reached; models
        trained across a change start high and do not mask it). Being a bound already, it adds
        no variance to the gap."""
        z = NormalDist().inv_cdf(self.config.confidence)
        bounds = [
            bound
            for level in (self.state.fresh if levels is None else levels)
            if (bound := self._level_bound(level, z)) is not None
        ]
        return (min(bounds), 0.0) if bounds else None

    def _record_early(self) -> None:
        """The serving model's first batches are in: its fresh level."""
        state = self.state
        state.early_recorded = True
        if not state.early.count:
            return
        if not state.fresh or state.fresh[-1].version != state.version:
            state.fresh.append(FreshLevel(version=state.version))
            del state.fresh[: -self.config.fresh_history]
        level = state.fresh[-1]
        level.early_loss, level.early_count = state.early.rate, state.early.count


def _pooled(pools: list[Pool]) -> Pool:
    """The sums over `pools` (plain arithmetic: this runs hundreds of times per decision)."""
    batches = count = 0
    loss = volume = 0.0
    loss_sq: float | None = 0.0
    for pool in pools:
        batches += pool.batches
        loss += pool.loss
        count += pool.count
        volume += pool.volume
        loss_sq = None if loss_sq is None or pool.loss_sq is None else loss_sq + pool.loss_sq
    return Pool.model_construct(
        batches=batches, loss=loss, count=count, volume=volume, loss_sq=loss_sq
    )


def _mean_volume(pools: list[Pool]) -> float:
    return sum(p.volume for p in pools) / len(pools) if pools else 0.0


def _reason(
    retrain: bool,
    name: str,
    currency: str,
    best: _Candidate,
    cost: float,
    realized: float | None,
    confidence: float,
    age: int,
    wait: int,
) -> str:
    # The point estimate can dip below zero (the fresh level is an upper bound): shown as 0.
    paid = (
        f"excess loss since {name}: {max(0.0, realized):,.0f} {currency}; "
        if realized is not None
        else ""
    )
    against = (
        f"its own first {age - best.segment} batch(es)"
        if best.basis == "degradation"
        else "fresh models"
    )
    if best.basis == "steady_drift":
        expected = (
            f"recent models lose {best.gap / max(best.segment, 1):.3g} per prediction per "
            f"batch of age; at age {best.segment} the excess paid since deployment is "
            f"{best.forecast:,.0f} {currency} ({confidence:.0%} lower bound)"
        )
        if retrain:
            return f"retrain {name}: {paid}{expected} >= retraining cost {cost:,.0f} {currency}"
        return f"keep {name}: {paid}{expected} < retraining cost {cost:,.0f} {currency}"
    evidence = (
        f"loss {best.current:.4g} over the last {best.segment} batch(es) vs "
        f"{best.reference:.4g} for {against}"
    )
    expected = (
        f"expected excess cost of keeping it {best.forecast:,.0f} {currency} over "
        f"{best.horizon} batch(es) ({confidence:.0%} lower bound; {evidence})"
    )
    if retrain:
        return f"retrain {name}: {paid}{expected} >= retraining cost {cost:,.0f} {currency}"
    if wait:
        return (
            f"keep {name} for now: {paid}{expected} >= retraining cost {cost:,.0f} {currency}, "
            f"but the change is {best.change_age} batch(es) old: a retraining in {wait} "
            "batch(es), on data of the new regime only, is cheaper than retraining now and "
            "again once the old data has left the training window"
        )
    return (
        f"keep {name}: {paid}expected excess cost {best.forecast:,.0f} {currency} "
        f"({confidence:.0%} lower bound; {evidence}) < retraining cost {cost:,.0f} {currency}"
    )


@dataclass
class _Candidate:
    """One explanation of the recent losses: a stretch of the last `segment` batches compared
    with a reference loss, forecast over `horizon` batches."""

    basis: Basis
    segment: int
    horizon: int
    current: float
    reference: float
    gap_variance: float
    # Batches since the change behind the excess began (None: unknown), and, for a model that
    # was bad from its first batch, how old the change was when it was trained.
    change_age: int | None
    trained_age: int | None = None
    lower: float = 0.0
    forecast: float = 0.0

    @property
    def gap(self) -> float:
        return self.current - self.reference


def _wait(
    excess: float,
    horizon: int,
    cost: float,
    change_age: int | None,
    trained_age: int | None,
    window: int,
) -> int:
    """How many batches to wait before retraining (0: now), when a retraining learns from the
    last `window` batches and the change began `change_age` batches ago.

    A model trained `a` batches into a change has seen a share min(1, a / window) of the new
    regime; its excess is taken to shrink in proportion, from the excess a model trained before
    the change has. The cheapest schedule of retrainings over the next `horizon` batches (any
    number of them, until the window is clean; after that waiting only costs) is found by
    dynamic programming; this returns when its first retraining is."""
    if change_age is None or change_age >= window:
        return 0
    # The serving model's excess is `excess`; it saw a share `seen` of the new regime.
    seen = min(1.0, trained_age / window) if trained_age is not None else 0.0
    if seen >= 1.0:
        return 0
    stale = excess / (1.0 - seen)
    last = max(0, min(horizon, window - change_age))

    def excess_of(model: int) -> float:
        """Per batch, of the serving model (-1) or of the one retrained at step `model`."""
        if model < 0:
            return excess
        return stale * max(0.0, 1.0 - (change_age + model) / window)

    # best[m]: the least cost from step t on while model m serves (-1: the current one);
    # first[m]: the step of the first retraining on that cheapest path (None: none).
    best = {m: excess_of(m) * max(0, horizon - last - 1) for m in range(-1, last + 1)}
    first: dict[int, int | None] = dict.fromkeys(best)
    for t in range(last, -1, -1):
        retrain = cost + excess_of(t) + best[t]
        for m in range(-1, t):
            keep = excess_of(m) + best[m]
            if retrain < keep:
                best[m], first[m] = retrain, t
            else:
                best[m] = keep
    start = first[-1]
    return 1 if start is None else start
