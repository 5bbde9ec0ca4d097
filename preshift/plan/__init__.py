"""Planning (pure): the desired footprint, its discrepancy from reality, and the plan."""

from preshift.plan.footprint import (
    DEFAULT_SPREAD,
    Change,
    Desired,
    Hold,
    PlanSettings,
    SpreadConstraint,
    desired_footprint,
    discrepancy,
    discrepancy_threshold,
    skew,
)
from preshift.plan.planner import Plan, PlanEntry, dependents, impact, make_plan

__all__ = [
    "DEFAULT_SPREAD",
    "Change",
    "Desired",
    "Hold",
    "Plan",
    "PlanEntry",
    "PlanSettings",
    "SpreadConstraint",
    "dependents",
    "desired_footprint",
    "discrepancy",
    "discrepancy_threshold",
    "impact",
    "make_plan",
    "skew",
]
