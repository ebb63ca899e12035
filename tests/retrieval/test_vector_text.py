"""Vectors as they are written to PostgreSQL: exact to the float32 pgvector stores."""

from __future__ import annotations

import random

import numpy as np
from django.contrib.auth.models import User
from django.db import connection
from pgvector import Vector

from aistack.retrieval.fields import vector_text
from aistack.retrieval.models import ChunkVector
from tests.retrieval.helpers import indexed, synthetic_vectors, unit

AWKWARD = [0.1, -0.0, 1e-40, -3.4028234e38, 1.17549435e-38, 0.30000000000000004,
           2.0 ** -149, 123456.789, 1 / 3]


def stored(text: str) -> np.ndarray:
    """Return what PostgreSQL stores for a vector's text, as float32."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::vector::float4[]", [text])
        return np.array(cursor.fetchone()[0], dtype=np.float32)


def test_postgresql_reads_back_the_float32_of_every_number(db: None) -> None:
    rng = np.random.default_rng(5)
    vectors = [AWKWARD, rng.standard_normal(384).tolist(),
               rng.standard_normal(384).astype(np.float32)]

    for vector in vectors:
        text = vector_text(vector)
        expected = np.asarray(vector, dtype=np.float32)
        assert np.array_equal(stored(text), expected)
        # What pgvector's own text form stores, in fewer characters.
        assert np.array_equal(stored(text), stored(Vector(vector).to_text()))
        assert len(text) < len(Vector(vector).to_text())


def test_vectors_written_through_the_model_are_stored_as_given(alice: User) -> None:
    indexed(alice.personal_workspace, alice, "Deploys", "Deploys run from the main branch.")
    synthetic_vectors(alice.personal_workspace, 20, random.Random(2), alice)
    written = ChunkVector.objects.filter(chunk__document__title__startswith="n").order_by("pk")

    with connection.cursor() as cursor:
        cursor.execute("SELECT embedding::float4[] FROM retrieval_chunkvector "
                       "WHERE id = ANY(%s) ORDER BY id", [[row.pk for row in written]])
        found = [np.array(row[0], dtype=np.float32) for row in cursor.fetchall()]

    field = ChunkVector._meta.get_field("embedding")
    assert field.get_prep_value(AWKWARD) == vector_text(AWKWARD)
    # synthetic_vectors draws them again from the same seed.
    rng = random.Random(2)
    dimensions = len(found[0])
    assert len(found) == 20
    for vector in found:
        assert np.array_equal(vector, np.asarray(unit(rng, dimensions), dtype=np.float32))
