"""Embedding spaces: the vectors of one model. Search reads the active space; a new
model's space fills alongside it until ``aistack reindex`` switches over."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, transaction
from django.utils import timezone

from aistack.jobs.exceptions import TransientJobError
from aistack.retrieval.embedding import embedding_model_info
from aistack.retrieval.models import ChunkVector, EmbeddingSpace, SpaceStatus
from aistack.retrieval.selectors import active_space_changed

# The HNSW graph: each vector's neighbours (M; twice that on the bottom layer) and how
# many candidates its insertion weighs (ef_construction). pgvector's defaults (16, 64)
# leave a graph that even a long search cannot make exact: measured by
# bench/retrieval.py over 1,000,000 chunks, recall@10 against exact search stayed at
# 0.93 however many candidates search weighed. Over 100,000 chunks
# (bench/retrieval.py --hnsw-graph M:EF --ef-sweep 100,200,400), recall@10 at
# ef_search 100 was 0.959 with (16, 64) and 0.991 with (24, 200), for 2.4 times the
# build time.
HNSW_M = 24
HNSW_EF_CONSTRUCTION = 200


def embedding_space_index_create(*, space: EmbeddingSpace, m: int = HNSW_M,
                                 ef_construction: int = HNSW_EF_CONSTRUCTION) -> None:
    """Create the space's HNSW index (cosine) over its vectors at half precision.

    Half precision halves the index, so twice as many vectors stay in memory; search
    re-ranks what the index finds by the full vectors (``selectors.vector_ranking``).
    """
    # The ids and widths are integers of ours, so formatting them in is safe; the
    # predicate must be a literal for the planner to match queries to this index.
    with connection.cursor() as cursor:
        # DDL on a table is refused while this transaction has deferred foreign-key
        # checks pending on it: run them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS chunkvector_hnsw_{int(space.pk)} "
            "ON retrieval_chunkvector USING hnsw "
            f"((embedding::halfvec({int(space.dimensions)})) halfvec_cosine_ops) "
            f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
            f"WHERE space_id = {int(space.pk)}"
        )


def embedding_space_for_configured_model() -> EmbeddingSpace:
    """Return the configured embedding model's space, creating it if need be.

    The first space is active at once. A later model's space is built alongside the
    active one (new documents get vectors in both) and serves search only once
    ``aistack reindex`` has filled it and switched over.
    """
    model, dimensions = embedding_model_info()
    with transaction.atomic():
        space, created = EmbeddingSpace.objects.select_for_update().get_or_create(
            model=model, defaults={"dimensions": dimensions}
        )
        if created or space.status == SpaceStatus.RETIRED:
            embedding_space_index_create(space=space)
            first = not EmbeddingSpace.objects.filter(status=SpaceStatus.ACTIVE).exists()
            space.status = SpaceStatus.ACTIVE if first else SpaceStatus.BUILDING
            space.activated_at = timezone.now() if first else None
            space.save(update_fields=["status", "activated_at"])
            active_space_changed()
    return space


def spaces_to_fill() -> list[EmbeddingSpace]:
    """Return the spaces new chunks need vectors in: the active one and any being built."""
    embedding_space_for_configured_model()
    return list(EmbeddingSpace.objects.exclude(status=SpaceStatus.RETIRED).order_by("pk"))


def spaces_unchanged(planned: Sequence[EmbeddingSpace]) -> None:
    """Raise unless the spaces to fill are still ``planned``; hold them until commit.

    Vectors are computed before the writing transaction; if ``aistack reindex``
    switched models meanwhile they would land in a retired space only.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM retrieval_embeddingspace WHERE status <> %s "
                       "ORDER BY id FOR SHARE", [SpaceStatus.RETIRED])
        current = [row[0] for row in cursor.fetchall()]
    if current != sorted(space.pk for space in planned):
        raise TransientJobError("the embedding model changed while indexing; indexing again")


@transaction.atomic
def embedding_space_activate(*, space: EmbeddingSpace) -> None:
    """Make search use ``space`` and drop the vectors of the one it replaces."""
    retired = list(EmbeddingSpace.objects.select_for_update()
                   .filter(status=SpaceStatus.ACTIVE).exclude(pk=space.pk))
    EmbeddingSpace.objects.filter(pk__in=[s.pk for s in retired]).update(
        status=SpaceStatus.RETIRED, activated_at=None)
    EmbeddingSpace.objects.filter(pk=space.pk).update(
        status=SpaceStatus.ACTIVE, activated_at=timezone.now())
    active_space_changed()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for old in retired:
            cursor.execute(f"DROP INDEX IF EXISTS chunkvector_hnsw_{int(old.pk)}")
    ChunkVector.objects.filter(space__in=retired).delete()
