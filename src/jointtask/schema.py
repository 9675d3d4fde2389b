"""Pydantic base for every config: unknown keys are errors, and errors read as one line."""

from __future__ import annotations

import math
import typing

from pydantic import BaseModel, ConfigDict, model_validator


def _numeric(annotation) -> bool:
    """int or float, possibly Optional."""
    if annotation in (int, float):
        return True
    args = typing.get_args(annotation)
    return bool(args) and all(a in (int, float, type(None)) for a in args) and any(a in (int, float) for a in args)


class Strict(BaseModel):
    """Unknown keys are errors; so are booleans and text where numbers belong (`width = true` is no
    width) and numbers that are not finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data):
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                v = data.get(name)
                if v is None or not _numeric(field.annotation):
                    continue
                if isinstance(v, bool):
                    raise ValueError(f"{name} must be a number, got {str(v).lower()}")
                if isinstance(v, str):  # "INF", "1e3": text is no number, whatever it would parse to
                    raise ValueError(f"{name} must be a number, got the text {v!r}")
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"{name} must be a finite number, got {v}")
        return data


def validation_message(err) -> str:
    """A pydantic ValidationError as one line."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()))
        msg = e.get("msg", "").removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
