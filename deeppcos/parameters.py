"""Every model setting of a run config, checked when the config loads.

The config's sections hold each model's settings as a mapping (``tabular.params``,
``image.params``, ``fusion.late``, ``fusion.intermediate``, ``severity.params``), read by the
model that uses them. Those models are built only when training reaches them, so a typo such as
``max_depht: 3`` used to pass ``load_config`` and fail minutes into ``train``, after the
branches had trained. :func:`model_setting_problems` builds each model's settings object (the
branches' parameter models, the fusion and severity factories with their own value checks)
without fitting anything, so ``load_config`` — and with it ``deeppcos validate --config``,
``train`` and ``tune`` — refuses a bad setting at once, naming the key.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from deeppcos.exceptions import ConfigError

if TYPE_CHECKING:  # the config is only annotated here: config.py imports this module
    from deeppcos.config import RunConfig
    from deeppcos.fusion.severity import Kind

__all__ = ["model_setting_problems"]


def model_setting_problems(config: RunConfig) -> list[str]:
    """One line per bad setting, ``section.key: what is wrong`` (empty when all are good)."""
    checks: list[tuple[str, Callable[[], Any]]] = []
    if config.tabular.enabled:
        checks.append(("tabular.params", lambda: _tabular(config.tabular.params)))
    if config.image.enabled:
        checks.append(("image.params", lambda: _image(config.image.params)))
    if config.fusion.enabled:
        checks.append(("fusion.late", lambda: _late(config.fusion.late)))
        checks.append(("fusion.intermediate", lambda: _intermediate(config.fusion.intermediate)))
    if config.severity.enabled:
        checks.append(
            ("severity.params", lambda: _severity(config.severity.kind, config.severity.params))
        )
    problems: list[str] = []
    for section, check in checks:
        try:
            check()
        except ConfigError as exc:
            problems.append(f"{section}: {_without_prefix(str(exc))}")
    return problems


def _tabular(params: dict[str, Any]) -> None:
    from deeppcos.tabular.branch import TabularParams

    _validate(TabularParams, params)


def _image(params: dict[str, Any]) -> None:
    from deeppcos.image.params import ImageParams  # no TensorFlow import

    _validate(ImageParams, params)


def _validate(model: Any, params: dict[str, Any]) -> None:
    """A branch's pydantic parameter model; its errors as one ConfigError."""
    try:
        model.model_validate(params)
    except ValidationError as exc:
        allowed = sorted(model.model_fields)
        raise ConfigError("; ".join(_pydantic_line(e, allowed) for e in exc.errors())) from None


def _late(params: dict[str, Any]) -> None:
    from deeppcos.fusion import late
    from deeppcos.fusion.stage import late_model

    late._check_params(late_model(params).get_params())


def _intermediate(params: dict[str, Any]) -> None:
    from deeppcos.fusion import intermediate
    from deeppcos.fusion.stage import intermediate_model

    intermediate._check_params(intermediate_model(params).get_params())


def _severity(kind: Kind, params: dict[str, Any]) -> None:
    from deeppcos.fusion import severity

    allowed = severity.OrdinalHead().get_params().keys() - {"kind", "seed"}
    _refuse_unknown(params, allowed)
    head = severity.OrdinalHead(kind, **params)
    severity._check_params(head.get_params())


def _refuse_unknown(params: dict[str, Any], allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        hints = [_hint(name, allowed) for name in unknown]
        raise ConfigError(
            f"unknown setting(s) {', '.join(h for h in hints)}; allowed: {', '.join(allowed)}"
        )


def _hint(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def _pydantic_line(error: Any, allowed: list[str]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error.get("type") == "extra_forbidden":
        return f"unknown setting {_hint(where, allowed)}"
    return f"{where}: {error['msg']}"


def _without_prefix(message: str) -> str:
    """The fusion factories already name their section ("fusion.late: …"): say it once."""
    for prefix in ("fusion.late: ", "fusion.intermediate: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
