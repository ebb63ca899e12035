"""Embedding spaces: the vectors of one model. Search reads the active space; a new
model's space fills alongside it until a switch (``reindex``) makes it the active one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from aistack.jobs.exceptions import TransientJobError
from aistack.replicas import everything_written
from aistack.retrieval.embedding import embedding_model_info
from aistack.retrieval.models import EmbeddingSpace, SpaceStatus
from aistack.retrieval.selectors import EXACT_SCAN_MAX_VECTORS, active_space_changed
from aistack.transactions import after_commit

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
# A space gets its index once it holds more vectors than this: below, search scans its
# vectors exactly (``selectors.EXACT_SCAN_MAX_VECTORS``), and every vector written pays no
# insertion into a graph. Built in bulk, a graph costs a fraction of inserting its vectors
# one by one (bench/ingest.py: the whole pipeline's time with and without).
INDEX_AFTER_VECTORS = EXACT_SCAN_MAX_VECTORS
# Memory for a bulk build, by the vectors to index (a graph built in memory, when it fits,
# is several times faster than on disk): about 2 KB a vector, within these bounds (MB).
# A parallel build shares it through /dev/shm (docker-compose.yml gives the database 1 GB).
_BUILD_KB_PER_VECTOR = 2
_BUILD_MEMORY_MB = (64, 1024)


def embedding_space_index_create(*, space: EmbeddingSpace, m: int = HNSW_M,
                                 ef_construction: int = HNSW_EF_CONSTRUCTION,
                                 concurrently: bool = False) -> None:
    """Create the space's HNSW index (cosine) over its vectors at half precision.

    Half precision halves the index, so twice as many vectors stay in memory; search
    re-ranks what the index finds by the full vectors (``selectors.vector_ranking``).
    Built ``concurrently``, it lets vectors be written meanwhile (outside a transaction).
    """
    # The ids and widths are integers of ours, so formatting them in is safe; the
    # predicate must be a literal for the planner to match queries to this index.
    with connection.cursor() as cursor:
        if not concurrently:
            # DDL on a table is refused while this transaction has deferred foreign-key
            # checks pending on it: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        if concurrently:  # outside any transaction: for this session, until done
            cursor.execute("SELECT count(*) FROM retrieval_chunkvector WHERE space_id = %s",
                           [space.pk])
            low, high = _BUILD_MEMORY_MB
            megabytes = min(high, max(low, int(cursor.fetchone()[0])
                                      * _BUILD_KB_PER_VECTOR // 1024))
            cursor.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                           [f"{megabytes}MB"])
        try:
            cursor.execute(
                f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS "
                f"{_index_name(space.pk)} ON retrieval_chunkvector USING hnsw "
                f"((embedding::halfvec({int(space.dimensions)})) halfvec_cosine_ops) "
                f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
                f"WHERE space_id = {int(space.pk)}"
            )
        finally:
            if concurrently:
                cursor.execute("RESET maintenance_work_mem")


def _index_name(space_id: int) -> str:
    return f"chunkvector_hnsw_{int(space_id)}"


# The index of that name, and whether it is usable.
_INDEX_STATE_SQL = ("SELECT i.indisvalid FROM pg_class c JOIN pg_index i "
                    "ON i.indexrelid = c.oid WHERE c.relname = %s")
# Records a space unindexed (by id) unless its index (by name) is there and usable.
_UNINDEXED_IF_GONE_SQL = f"UPDATE retrieval_embeddingspace SET indexed = false WHERE id = %s AND indexed AND NOT EXISTS ({_INDEX_STATE_SQL} AND i.indisvalid)"  # noqa: S608, E501 - constants


def _index_valid(space_id: int) -> bool | None:
    """Return whether the space's index is usable; None when there is none."""
    with connection.cursor() as cursor:
        cursor.execute(_INDEX_STATE_SQL, [_index_name(space_id)])
        row = cursor.fetchone()
    return None if row is None else bool(row[0])


# Session-level advisory locks, by (class, space id): one builder or clearer per space.
_INDEX_LOCK, _CLEAR_LOCK = 7_310_001, 7_310_002


@contextmanager
def _space_lock(lock_class: int, space_id: int, *, wait: bool) -> Iterator[bool]:
    """Hold the lock on this connection (no model call may run meanwhile: a model call
    hands the connection back to the pool); yield whether it was taken."""
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [lock_class, space_id])
            taken = True
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [lock_class, space_id])
            taken = bool(cursor.fetchone()[0])
        try:
            yield taken
        finally:
            if taken:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [lock_class, space_id])


def embedding_space_index_ready(space: EmbeddingSpace, *, wait: bool = False) -> bool:
    """Build the space's index if it has none, concurrently, so that indexing goes on
    meanwhile, and record it built; return whether it is usable (False: another process
    is building it, unless ``wait``)."""
    if not _index_valid(space.pk):
        if connection.in_atomic_block:
            # Inside a caller's transaction (a test's): built in place, writes waiting.
            with connection.cursor() as cursor:
                cursor.execute(f"DROP INDEX IF EXISTS {_index_name(space.pk)}")
            embedding_space_index_create(space=space)
        else:
            with _space_lock(_INDEX_LOCK, space.pk, wait=wait) as taken:
                if not taken:
                    return False
                # Retired meanwhile: its clearer drops whatever index it has.
                if not EmbeddingSpace.objects.filter(pk=space.pk).exclude(
                        status=SpaceStatus.RETIRED).exists():
                    return False
                state = _index_valid(space.pk)
                if state is False:  # a build stopped half-way leaves an invalid index
                    with connection.cursor() as cursor:
                        cursor.execute(
                            f"DROP INDEX CONCURRENTLY IF EXISTS {_index_name(space.pk)}")
                if not state:
                    embedding_space_index_create(space=space, concurrently=True)
    if EmbeddingSpace.objects.filter(pk=space.pk, indexed=False).update(indexed=True):
        space.indexed = True
        # Search's cached active space says whether it has one; a replica is read only
        # once it has replayed the build.
        after_commit(everything_written)
        active_space_changed()
    return True


def embedding_space_index_due(space: EmbeddingSpace, *, beyond: int | None = None) -> bool:
    """Return whether the space has no usable index and holds more vectors than exact
    scans serve well (or than ``beyond``).

    A space recorded as indexed whose index has gone (dropped by hand, or never restored)
    is recorded as not indexed: search scans it exactly again, until it is built again.
    Without its index, a walk of it would sort every vector of the space.
    """
    if space.indexed:
        with connection.cursor() as cursor:
            # Checked and cleared in one statement: a build finishing meanwhile records
            # the flag only once its index is valid.
            cursor.execute(_UNINDEXED_IF_GONE_SQL, [space.pk, _index_name(space.pk)])
            if cursor.rowcount != 1:  # it has its index
                return False
        space.indexed = False
        active_space_changed()
    limit = INDEX_AFTER_VECTORS if beyond is None else beyond
    with connection.cursor() as cursor:
        # Counted no further than needed: a space being filled can hold millions.
        cursor.execute("SELECT count(*) FROM (SELECT 1 FROM retrieval_chunkvector "
                       "WHERE space_id = %s LIMIT %s) v", [space.pk, limit + 1])
        return int(cursor.fetchone()[0]) > limit


def active_space_index_due(*, beyond: int | None = None) -> EmbeddingSpace | None:
    """Return the active space if its index is due (see ``embedding_space_index_due``)."""
    space = EmbeddingSpace.objects.filter(status=SpaceStatus.ACTIVE).first()
    return space if space is not None and embedding_space_index_due(
        space, beyond=beyond) else None


def embedding_space_for_configured_model() -> EmbeddingSpace:
    """Return the configured embedding model's space, creating it if need be.

    The first space is active at once; its index is built once it outgrows exact scans
    (``active_space_index_due``: by a bulk ingest at its end, or by the scheduler). A
    later model's space is built alongside the active one (new documents get vectors in
    both), and serves search once a switch (``reindex``) has filled it and built its
    index, if it needs one.
    """
    model, dimensions = embedding_model_info()
    with transaction.atomic():
        space, created = (EmbeddingSpace.objects.select_for_update()
                          .exclude(status=SpaceStatus.RETIRED)
                          .get_or_create(model=model, defaults={"dimensions": dimensions}))
        if created and not EmbeddingSpace.objects.filter(status=SpaceStatus.ACTIVE).exists():
            space.status, space.activated_at = SpaceStatus.ACTIVE, timezone.now()
            space.save(update_fields=["status", "activated_at"])
            active_space_changed()
    return space


def spaces_to_fill() -> list[EmbeddingSpace]:
    """Return the spaces new chunks need vectors in: the active one and any being built.

    Only the first space is made here. Another model's space is made by a switch alone:
    a process that has not yet seen a change of model must not bring back the old one.
    """
    if not EmbeddingSpace.objects.filter(status=SpaceStatus.ACTIVE).exists():
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
    """Make search use ``space``. The one it replaces is retired; its vectors are deleted
    later, by ``spaces_retired_clear``, once no search can still be reading them."""
    retired = list(EmbeddingSpace.objects.select_for_update()
                   .filter(status=SpaceStatus.ACTIVE).exclude(pk=space.pk))
    EmbeddingSpace.objects.filter(pk__in=[s.pk for s in retired]).update(
        status=SpaceStatus.RETIRED, retired_at=timezone.now())
    EmbeddingSpace.objects.filter(pk=space.pk).update(
        status=SpaceStatus.ACTIVE, activated_at=timezone.now())
    # A replica serves the new space only once it has all of its vectors: recorded
    # before search's cached entry names the new space.
    after_commit(everything_written)
    active_space_changed()


def spaces_building_retire(*, keep: EmbeddingSpace) -> list[str]:
    """Retire every space being built but ``keep``: a switch to a model chosen since;
    return their models."""
    with transaction.atomic():
        stale = list(EmbeddingSpace.objects.select_for_update()
                     .filter(status=SpaceStatus.BUILDING).exclude(pk=keep.pk))
        EmbeddingSpace.objects.filter(pk__in=[s.pk for s in stale]).update(
            status=SpaceStatus.RETIRED, retired_at=timezone.now())
    return [s.model for s in stale]


# Vectors deleted per transaction when a retired space is cleared: each batch holds the
# locks of its rows only, for a fraction of a second.
RETIRED_DELETE_BATCH = 5000
# How long a space that served search keeps its vectors once retired: a search that
# began before the switch, or a process still holding the active space it cached
# (``selectors._ACTIVE_SPACE_TTL_SECONDS``), may read them meanwhile.
RETIRED_GRACE_SECONDS = 360


def spaces_retired_clear(*, batch: int = RETIRED_DELETE_BATCH,
                         grace_seconds: float = RETIRED_GRACE_SECONDS) -> int:
    """Delete retired spaces: their HNSW index (concurrently), their vectors a batch per
    transaction, then the space; return how many vectors went.

    Safe from several processes at once (one clears a space, the others skip it) and
    to stop half-way (the next run goes on). Runs outside a transaction only.
    """
    if connection.in_atomic_block:
        raise RuntimeError("retired spaces are cleared outside any transaction")
    served_until = timezone.now() - timedelta(seconds=grace_seconds)
    due = (EmbeddingSpace.objects.filter(status=SpaceStatus.RETIRED)
           .filter(Q(activated_at__isnull=True) | Q(retired_at__lte=served_until)))
    deleted = 0
    for space_id in list(due.values_list("pk", flat=True)):
        with (_space_lock(_CLEAR_LOCK, space_id, wait=False) as taken,
              _space_lock(_INDEX_LOCK, space_id, wait=False) as not_building):
            if not (taken and not_building):
                continue  # another process is clearing it, or still building its index
            with connection.cursor() as cursor:
                # Waits for searches using the index instead of blocking the table.
                cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_index_name(space_id)}")
            while True:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(
                        "DELETE FROM retrieval_chunkvector WHERE id IN (SELECT id FROM "
                        "retrieval_chunkvector WHERE space_id = %s LIMIT %s)",
                        [space_id, batch])
                    gone = cursor.rowcount
                deleted += gone
                if gone == 0:
                    break
            # Its staged vectors go with it (few: those of documents being indexed).
            EmbeddingSpace.objects.filter(pk=space_id, status=SpaceStatus.RETIRED).delete()
    return deleted
