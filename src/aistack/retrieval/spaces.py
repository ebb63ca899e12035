"""Embedding spaces: the vectors of one model. Search reads the active space; a new
model's space fills alongside it until a switch (``reindex``) makes it the active one."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from aistack.jobs.exceptions import TransientJobError
from aistack.retrieval.embedding import embedding_model_info
from aistack.retrieval.models import EmbeddingSpace, SpaceStatus
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
    active one (new documents get vectors in both) and serves search once
    ``reindex.embedding_switch`` (or ``aistack reindex``) has filled it and switched over.
    """
    model, dimensions = embedding_model_info()
    with transaction.atomic():
        space, created = (EmbeddingSpace.objects.select_for_update()
                          .exclude(status=SpaceStatus.RETIRED)
                          .get_or_create(model=model, defaults={"dimensions": dimensions}))
        if created:
            embedding_space_index_create(space=space)
            if not EmbeddingSpace.objects.filter(status=SpaceStatus.ACTIVE).exists():
                space.status, space.activated_at = SpaceStatus.ACTIVE, timezone.now()
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


def spaces_still_building(space_ids: Sequence[int]) -> set[int]:
    """Return which of the spaces are still being built, held so until commit."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM retrieval_embeddingspace WHERE id = ANY(%s) "
                       "AND status = %s FOR SHARE", [list(space_ids), SpaceStatus.BUILDING])
        return {row[0] for row in cursor.fetchall()}


@transaction.atomic
def embedding_space_activate(*, space: EmbeddingSpace) -> None:
    """Make search use ``space``; the one it replaces is retired, its vectors deleted
    afterwards by ``spaces_retired_clear`` (never here: that would hold the table)."""
    retired = list(EmbeddingSpace.objects.select_for_update()
                   .filter(status=SpaceStatus.ACTIVE).exclude(pk=space.pk))
    EmbeddingSpace.objects.filter(pk__in=[s.pk for s in retired]).update(
        status=SpaceStatus.RETIRED, activated_at=None)
    EmbeddingSpace.objects.filter(pk=space.pk).update(
        status=SpaceStatus.ACTIVE, activated_at=timezone.now())
    active_space_changed()


def spaces_building_retire(*, keep: EmbeddingSpace) -> list[str]:
    """Retire every space being built but ``keep``: a switch to a model chosen since;
    return their models."""
    with transaction.atomic():
        stale = list(EmbeddingSpace.objects.select_for_update()
                     .filter(status=SpaceStatus.BUILDING).exclude(pk=keep.pk))
        EmbeddingSpace.objects.filter(pk__in=[s.pk for s in stale]).update(
            status=SpaceStatus.RETIRED)
    return [s.model for s in stale]


# Vectors deleted per transaction when a retired space is cleared: each batch holds the
# locks of its rows only, for a fraction of a second.
RETIRED_DELETE_BATCH = 5000


def spaces_retired_clear(*, batch: int = RETIRED_DELETE_BATCH) -> int:
    """Delete retired spaces: their HNSW index (concurrently), their vectors a batch per
    transaction, then the space; return how many vectors went. Safe to run at any time,
    from several processes, and to stop halfway: the next run goes on."""
    deleted = 0
    for space_id in list(EmbeddingSpace.objects.filter(status=SpaceStatus.RETIRED)
                         .values_list("pk", flat=True)):
        index = f"chunkvector_hnsw_{int(space_id)}"
        with connection.cursor() as cursor:
            # CONCURRENTLY waits for searches using the index instead of blocking the
            # table; it cannot run inside a transaction.
            concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
            try:
                cursor.execute(f"DROP INDEX {concurrently}IF EXISTS {index}")
            except DatabaseError:
                # Another process is dropping it: it is gone, or will be on the next run.
                continue
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "DELETE FROM retrieval_chunkvector WHERE id IN (SELECT id FROM "
                    "retrieval_chunkvector WHERE space_id = %s LIMIT %s)", [space_id, batch])
                gone = cursor.rowcount
            deleted += gone
            if gone < batch:
                break
        # What was written into it meanwhile, and its staged vectors, go with it.
        EmbeddingSpace.objects.filter(pk=space_id, status=SpaceStatus.RETIRED).delete()
    return deleted
