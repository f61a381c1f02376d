"""Which plausible range applies to a cohort's column, and where it came from.

Three sources, most specific first:

* **the spec** (``ranges: {age: [0, 120]}``): the cohort's owner knows their population; a spec
  range replaces the catalog's and is the only way a non-catalog column gets a range;
* **the catalog's PCOS-cohort range** (``Feature.pcos_range``), only for a PCOS cohort: where the
  clinical reference's heuristic is an assumption about who is in a PCOS study (age 10–60,
  adult weight and height) rather than about what a human body can measure;
* **the catalog's plausible limit** (``Feature.plausible``): values outside it are entry or unit
  errors in any cohort.

A column with none of these has no range check, and the load report says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from deeppcos.knowledge.catalog import CATALOG

SOURCE_TEXT = {
    "spec": "the spec's ranges",
    "catalog-pcos": "the catalog's range for a PCOS cohort (clinical-reference §1)",
    "catalog": "the catalog's plausible limit",
}


@dataclass(frozen=True)
class RangeRule:
    """A closed range [low, high] (an open end is ±inf) with its unit and source."""

    low: float
    high: float
    unit: str
    source: str  # a key of SOURCE_TEXT

    def outside(self, value: float) -> bool:
        return value < self.low or value > self.high

    def text(self) -> str:
        return format_range(self.low, self.high, self.unit)

    def to_json(self) -> dict[str, Any]:
        return {
            "low": None if math.isinf(self.low) else self.low,
            "high": None if math.isinf(self.high) else self.high,
            "unit": self.unit,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RangeRule:
        low, high = data.get("low"), data.get("high")
        return cls(
            -math.inf if low is None else float(low),
            math.inf if high is None else float(high),
            str(data.get("unit") or ""),
            str(data.get("source") or "catalog"),
        )


def format_range(low: float, high: float, unit: str = "") -> str:
    """'10–60 a', '≥ 0 kg', '≤ 5' (an open end is not printed as 'inf')."""
    suffix = f" {unit}" if unit and unit != "1" else ""
    if math.isinf(low) and math.isinf(high):
        return "any value"
    if math.isinf(high):
        return f"≥ {low:g}{suffix}"
    if math.isinf(low):
        return f"≤ {high:g}{suffix}"
    return f"{low:g}–{high:g}{suffix}"


def catalog_rule(column: str, *, pcos: bool) -> RangeRule | None:
    """The catalog's range for ``column``: its PCOS-cohort range for a PCOS cohort where it has
    one, else its plausible limit; None for a non-catalog column or one without a range."""
    feature = CATALOG.get(column)
    if feature is None:
        return None
    if pcos and feature.pcos_range is not None:
        return RangeRule(*feature.pcos_range, feature.unit, "catalog-pcos")
    if feature.plausible is None:
        return None
    return RangeRule(*feature.plausible, feature.unit, "catalog")


def range_rules(
    columns: Iterable[str],
    *,
    pcos: bool = True,
    overrides: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, RangeRule]:
    """The range each column is checked against (columns without one are left out)."""
    overrides = overrides or {}
    rules: dict[str, RangeRule] = {}
    for column in columns:
        if column in overrides:
            low, high = overrides[column]
            feature = CATALOG.get(column)
            rules[column] = RangeRule(
                -math.inf if low is None else float(low),
                math.inf if high is None else float(high),
                feature.unit if feature else "",
                "spec",
            )
            continue
        rule = catalog_rule(column, pcos=pcos)
        if rule is not None:
            rules[column] = rule
    return rules


def rules_for_spec(spec: Any, columns: Iterable[str]) -> dict[str, RangeRule]:
    """:func:`range_rules` for a :class:`~deeppcos.data.spec.CohortSpec`'s cohort."""
    return range_rules(columns, pcos=spec.is_pcos, overrides=spec.ranges)


def rules_to_json(rules: Mapping[str, RangeRule]) -> dict[str, dict[str, Any]]:
    return {column: rule.to_json() for column, rule in rules.items()}


def rules_from_json(data: Mapping[str, Any] | None) -> dict[str, RangeRule] | None:
    """Rules a run recorded (``cohort.json`` "ranges"); None when the run predates them."""
    if data is None:
        return None
    return {str(column): RangeRule.from_json(rule) for column, rule in data.items()}
