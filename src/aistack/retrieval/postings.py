"""The text index: posting lists packed as arrays, kept fresh by merging new postings in.

Index jobs write each new chunk's postings as rows (``Posting``): cheap to write, and
found by search from the moment their transaction commits. Rows are slow to rank by the
million, so a merge folds them, in the background, into one packed list per term and
workspace (``PostingList``), which search reads and scores with numpy
(``retrieval.textrank``). A deleted chunk is recorded by a trigger (``DroppedChunk``);
search skips it in the lists until the next merge takes it out.

Everything is in PostgreSQL and every merge is one transaction: a crash at any point
leaves the lists, the new postings and the dropped chunks agreeing with the chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from django.db import DatabaseError, connection, transaction

from aistack.postgresql.binding import bound_cursor

logger = logging.getLogger(__name__)

# PostgreSQL's binary forms of int8, int2 and int4 (int8send and friends): big-endian.
CHUNK_ID = np.dtype(">i8")
TF = np.dtype(">i2")
LENGTH = np.dtype(">i4")
# A workspace is merged once it has this many new postings (about 50 chunks' worth)
# or this many dropped chunks; below that, reading them as rows costs a search little.
MERGE_AFTER_POSTINGS = 5_000
MERGE_AFTER_DROPPED = 200
# Lists are rewritten this many terms to a statement.
_WRITE_BATCH = 2_000


@dataclass(frozen=True)
class Postings:
    """One term's postings: chunk ids ascending, with their term frequencies and lengths."""

    chunk_ids: npt.NDArray[np.int64]
    tfs: npt.NDArray[np.int16]
    lengths: npt.NDArray[np.int32]
    # Their highest score for a term of weight 1, by average length, kept while a
    # process keeps them (retrieval.textrank).
    peaks: dict[float, float] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def unpack(cls, chunk_ids: bytes, tfs: bytes, lengths: bytes) -> Postings:
        """Read packed arrays into this machine's byte order, as compact as stored."""
        return cls(np.frombuffer(chunk_ids, CHUNK_ID).astype(np.int64),
                   np.frombuffer(tfs, TF).astype(np.int16),
                   np.frombuffer(lengths, LENGTH).astype(np.int32))

    @property
    def nbytes(self) -> int:
        return int(self.chunk_ids.nbytes + self.tfs.nbytes + self.lengths.nbytes)

    def pack(self) -> tuple[bytes, bytes, bytes]:
        return (self.chunk_ids.astype(CHUNK_ID).tobytes(), self.tfs.astype(TF).tobytes(),
                self.lengths.astype(LENGTH).tobytes())

    def without(self, dropped: npt.NDArray[np.int64]) -> Postings:
        """Return these postings less those of the dropped chunks (sorted ids)."""
        if not dropped.size or not self.chunk_ids.size:
            return self
        found = np.searchsorted(self.chunk_ids, dropped)
        found = found[found < self.chunk_ids.size]
        found = found[np.isin(self.chunk_ids[found], dropped)]
        if not found.size:
            return self
        keep = np.ones(self.chunk_ids.size, dtype=bool)
        keep[found] = False
        return Postings(self.chunk_ids[keep], self.tfs[keep], self.lengths[keep])

    def joined(self, other: Postings) -> Postings:
        """Return both sets of postings, in chunk id order."""
        ids = np.concatenate([self.chunk_ids, other.chunk_ids])
        order = np.argsort(ids, kind="stable")
        return Postings(ids[order], np.concatenate([self.tfs, other.tfs])[order],
                        np.concatenate([self.lengths, other.lengths])[order])


@dataclass(frozen=True)
class MergeResult:
    merged_postings: int
    dropped_chunks: int
    lists_written: int


def posting_lists_merge(*, workspace_id: int) -> MergeResult:
    """Fold a workspace's new postings into its lists and take its dropped chunks out."""
    with transaction.atomic(), connection.cursor() as cursor:
        # One merge per workspace at a time; index jobs go on writing meanwhile.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                       [f"retrieval.postings.merge:{workspace_id}"])
        cursor.execute(
            "DELETE FROM retrieval_droppedchunk WHERE workspace_id = %s "
            "RETURNING chunk_id, lexemes", [workspace_id])
        dropped_rows = cursor.fetchall()
        dropped = np.sort(np.array([chunk_id for chunk_id, _ in dropped_rows], dtype=np.int64))
        touched = {lexeme for _, lexemes in dropped_rows for lexeme in lexemes}
        # The rows merged are exactly those this statement deletes: postings committed
        # after it began stay rows, for the next merge.
        cursor.execute(
            """
            WITH merged AS (
                DELETE FROM retrieval_posting WHERE workspace_id = %s
                RETURNING lexeme, chunk_id, tf, length
            )
            SELECT lexeme, string_agg(int8send(chunk_id), '' ORDER BY chunk_id),
                   string_agg(int2send(tf::int2), '' ORDER BY chunk_id),
                   string_agg(int4send(length::int4), '' ORDER BY chunk_id)
            FROM merged GROUP BY lexeme
            """, [workspace_id])
        fresh = {lexeme: Postings.unpack(ids, tfs, lengths)
                 for lexeme, ids, tfs, lengths in cursor.fetchall()}
        touched.update(fresh)
        written = 0
        for batch in _batches(sorted(touched), _WRITE_BATCH):
            cursor.execute(
                "SELECT lexeme, chunk_ids, tfs, lengths FROM retrieval_postinglist "
                "WHERE workspace_id = %s AND lexeme = ANY(%s)", [workspace_id, batch])
            current = {lexeme: Postings.unpack(ids, tfs, lengths)
                       for lexeme, ids, tfs, lengths in cursor.fetchall()}
            lists = {}
            for lexeme in batch:
                merged = current.get(lexeme)
                merged = merged.without(dropped) if merged is not None else None
                if lexeme in fresh:
                    merged = fresh[lexeme] if merged is None else merged.joined(fresh[lexeme])
                if merged is not None:
                    lists[lexeme] = merged
            written += _lists_write(workspace_id, lists)
    merged_postings = sum(p.chunk_ids.size for p in fresh.values())
    logger.info("retrieval: merged %d postings and %d dropped chunks into %d lists of "
                "workspace %d", merged_postings, dropped.size, written, workspace_id)
    return MergeResult(merged_postings=merged_postings, dropped_chunks=int(dropped.size),
                       lists_written=written)


def _lists_write(workspace_id: int, lists: dict[str, Postings]) -> int:
    kept = {lexeme: p for lexeme, p in lists.items() if p.chunk_ids.size}
    empty = [lexeme for lexeme, p in lists.items() if not p.chunk_ids.size]
    packed = {lexeme: p.pack() for lexeme, p in kept.items()}
    # Bound on the server: the lists travel as binary, not spelled out in the statement.
    with bound_cursor() as cursor:
        if empty:
            cursor.execute("DELETE FROM retrieval_postinglist "
                           "WHERE workspace_id = %s AND lexeme = ANY(%b)", [workspace_id, empty])
        if packed:
            cursor.execute(
                "INSERT INTO retrieval_postinglist "
                "(workspace_id, lexeme, chunk_ids, tfs, lengths, postings) "
                "SELECT %s, * FROM unnest(%b::text[], %b::bytea[], %b::bytea[], %b::bytea[], "
                "%b::int[]) "
                "ON CONFLICT (workspace_id, lexeme) DO UPDATE SET "
                "chunk_ids = EXCLUDED.chunk_ids, tfs = EXCLUDED.tfs, "
                "lengths = EXCLUDED.lengths, postings = EXCLUDED.postings, "
                "version = EXCLUDED.version",
                [workspace_id, list(packed), [ids for ids, _, _ in packed.values()],
                 [tfs for _, tfs, _ in packed.values()],
                 [lengths for _, _, lengths in packed.values()],
                 [kept[lexeme].chunk_ids.size for lexeme in packed]])
    return len(lists)


def _batches(items: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def workspaces_due_for_merge() -> list[int]:
    """Return the workspaces with enough new postings or dropped chunks to merge."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT workspace_id FROM retrieval_posting GROUP BY workspace_id "
            "HAVING count(*) >= %s "
            "UNION SELECT workspace_id FROM retrieval_droppedchunk GROUP BY workspace_id "
            "HAVING count(*) >= %s", [MERGE_AFTER_POSTINGS, MERGE_AFTER_DROPPED])
        return sorted(workspace_id for (workspace_id,) in cursor.fetchall())


def posting_lists_merge_due() -> int:
    """Merge every workspace that is due; return how many were."""
    due = workspaces_due_for_merge()
    for workspace_id in due:
        posting_lists_merge(workspace_id=workspace_id)
    if due:
        _merged_rows_clear()
    return len(due)


def posting_lists_merge_all(*, workspace_ids: Sequence[int]) -> None:
    """Merge the given workspaces now, due or not (after a bulk ingest)."""
    for workspace_id in sorted(set(workspace_ids)):
        posting_lists_merge(workspace_id=workspace_id)
    if workspace_ids:
        _merged_rows_clear()


def _merged_rows_clear() -> None:
    """Vacuum the rows merges deleted from the new postings and the dropped chunks.

    Every search reads its terms' new postings, by a bitmap scan that visits each row
    version its index names, deleted or not, and never learns which are dead. Until
    autovacuum came by (a minute or more later), a search after a bulk ingest read the
    thousands of rows its terms had before the merge: most of a text search's time.
    """
    if connection.in_atomic_block:  # VACUUM cannot run in a transaction; autovacuum will
        return
    try:
        with connection.cursor() as cursor:
            # SKIP_LOCKED: a vacuum under way (another merge's, autovacuum's) goes on alone.
            # The tables fill again at once: their empty pages are kept, sparing the lock
            # that giving them back takes (and replicas replay).
            cursor.execute("VACUUM (SKIP_LOCKED, TRUNCATE false) "
                           "retrieval_posting, retrieval_droppedchunk")
    except DatabaseError as exc:  # the merge is done: autovacuum will do this later
        logger.warning("retrieval: vacuum after a merge failed: %s", exc)
