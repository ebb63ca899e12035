"""pgvector's model field, writing vectors faster."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from pgvector.django import VectorField as PgvectorField


@cache
def _template(dimensions: int) -> str:
    # Nine significant digits tell every float32 apart (FLT_DECIMAL_DIG): the text is
    # read back into the same float32.
    return "[" + ",".join(["%.9g"] * dimensions) + "]"


def vector_text(vector: Sequence[float] | np.ndarray) -> str:
    """Return pgvector's text form of ``vector``, exact to the float32 it stores.

    pgvector's own spells each number as a Python float (17 digits for most float32s),
    one at a time: about 220 us for 384 numbers here, against 60 us this way, and the
    text is a third shorter for PostgreSQL to read.
    """
    # Rounded to float32 first, as PostgreSQL would: rounding twice (to nine digits, then
    # to float32) could differ from it in the last bit.
    values = np.asarray(vector, dtype=np.float32)
    return _template(len(values)) % tuple(values.tolist())


class VectorField(PgvectorField):
    """pgvector's ``VectorField``, whose lists and arrays are written by ``vector_text``."""

    def get_prep_value(self, value: Any) -> str | None:
        if isinstance(value, list | np.ndarray):
            return vector_text(value)
        return super().get_prep_value(value)

    def deconstruct(self) -> Any:
        # The same column as pgvector's field: migrations name that one, and need none.
        name, _, args, kwargs = super().deconstruct()
        return name, f"{PgvectorField.__module__}.{PgvectorField.__qualname__}", args, kwargs
