"""Plugin settings: validate a provider's or role's settings against its pydantic model.

Providers call :func:`parse_settings` in ``open`` (``provider_config``) and roles for their group
``config``, so every bad setting becomes the same :class:`~reconciler.core.errors.ConfigError`:
``<where>.<field>: <what is wrong>``, naming the first problem pydantic found, with the field
also in ``ConfigError.field`` (so the engine can add the stack-file line).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from reconciler.core.errors import ConfigError
from reconciler.core.fieldpath import format_loc, join

M = TypeVar("M", bound=BaseModel)


def first_problem(exc: ValidationError) -> tuple[str, str]:
    """``(field path, message)`` of the first problem: ``("zones[0]", "'x' is not a zone")``."""
    err = exc.errors()[0]
    return format_loc(err["loc"]), str(err["msg"]).removeprefix("Value error, ")


def parse_settings(model: type[M], raw: Mapping[str, Any] | None, *, where: str = "provider_config") -> M:
    """``raw`` validated as ``model``; ConfigError naming ``<where>.<field>`` when it is wrong."""
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        loc, msg = first_problem(exc)
        field = join(where, loc)
        raise ConfigError(f"{field}: {msg}", field=field) from None
