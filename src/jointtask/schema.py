"""Pydantic base for every config: unknown keys are errors, and errors read as one line."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
