"""Chunks, their vectors and the statistics text search ranks with."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.search import SearchVectorField
from django.db import models

from aistack.accounts.models import Workspace
from aistack.retrieval.fields import VectorField


class Chunk(models.Model):
    document = models.ForeignKey("documents.Document", on_delete=models.CASCADE,
                                 related_name="chunks")
    # Denormalized from the document so searches filter by workspace without a join.
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField()
    start_char = models.PositiveIntegerField()
    end_char = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64)
    # English stems of the document title and this chunk: the terms its postings are
    # written from, and its snippets highlighted with.
    search_vector = SearchVectorField(null=True)
    # Number of stemmed terms in search_vector: BM25's document length.
    term_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="one_chunk_per_ordinal")
        ]
        indexes = [models.Index(fields=["workspace"], name="chunk_workspace")]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


class SpaceStatus(models.TextChoices):
    BUILDING = "building", "Building"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class EmbeddingSpace(models.Model):
    """The vectors one embedding model produced; search reads only the active space.

    A retired space is never used again: its vectors are deleted in the background
    (``spaces.spaces_retired_clear``), and choosing its model again builds a new one.
    """

    model = models.CharField(max_length=300)
    dimensions = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=SpaceStatus.choices,
                              default=SpaceStatus.BUILDING)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    # Whether its HNSW index is built: a space gets one only once it holds more vectors
    # than an exact scan serves well (``spaces.embedding_space_index_due``).
    indexed = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="active"),
                                    name="one_active_embedding_space"),
            models.UniqueConstraint(fields=["model"], condition=~models.Q(status="retired"),
                                    name="one_live_space_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.model} ({self.status})"


class ChunkVector(models.Model):
    """A chunk's vector in one embedding space.

    The column has no fixed width so spaces of different models share the table;
    each space that has grown past exact scans gets its own HNSW index over
    ``embedding::halfvec(dimensions)``, partial on ``space_id`` (see
    ``spaces.embedding_space_index_create``).
    """

    chunk = models.ForeignKey(Chunk, on_delete=models.CASCADE, related_name="vectors")
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="vectors")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    # Hash of the exact text embedded: identical text is never embedded twice.
    input_hash = models.CharField(max_length=64)
    embedding = VectorField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chunk", "space"], name="one_vector_per_space")
        ]
        indexes = [
            models.Index(fields=["space", "workspace"], name="chunkvector_space_ws"),
            models.Index(fields=["space", "input_hash"], name="chunkvector_space_hash"),
        ]

    def __str__(self) -> str:
        return f"{self.chunk_id} in {self.space_id}"


class WorkspaceTerm(models.Model):
    """How many of a workspace's chunks contain a stemmed term: BM25's document frequency.

    Kept per workspace so that a search's statistics are summed over the workspaces it
    reads and no other: a caller's scores never tell what other workspaces contain.
    """

    pk = models.CompositePrimaryKey("workspace_id", "lexeme")
    workspace_id = models.BigIntegerField()
    lexeme = models.TextField()
    df = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.lexeme} in {self.workspace_id}: {self.df}"


class WorkspaceCorpus(models.Model):
    """A workspace's chunk count and their summed BM25 lengths, for BM25's N and avgdl."""

    workspace_id = models.BigIntegerField(primary_key=True)
    chunks = models.BigIntegerField(default=0)
    length = models.BigIntegerField(default=0, help_text="The chunks' term counts, summed.")

    def __str__(self) -> str:
        return f"{self.workspace_id}: {self.chunks} chunks"


class Posting(models.Model):
    """One term of one chunk, with its frequency: a posting not yet merged into its list.

    Index jobs write these with their chunks; ``retrieval.postings`` merges them into
    ``PostingList`` rows in the background, and search reads both. ``chunk_id``
    references retrieval_chunk with ON DELETE CASCADE in the database (see migration
    0002): deleting a document must not load its postings into Python the way a
    Django-side cascade would.
    """

    pk = models.CompositePrimaryKey("lexeme", "workspace_id", "chunk_id")
    lexeme = models.TextField()
    workspace_id = models.BigIntegerField()
    chunk_id = models.BigIntegerField()
    tf = models.PositiveSmallIntegerField(help_text="How often the term occurs in the chunk.")
    length = models.PositiveIntegerField(help_text="The chunk's term count (BM25 length).")

    class Meta:
        indexes = [models.Index(fields=["chunk_id"], name="posting_chunk")]

    def __str__(self) -> str:
        return f"{self.lexeme} in {self.chunk_id}"


class PostingList(models.Model):
    """A term's merged postings in one workspace, as arrays: the text index search reads.

    Each array is packed big-endian (PostgreSQL's own binary form), in ascending chunk
    id order, and stored uncompressed so a search reads it at memory speed.
    """

    pk = models.CompositePrimaryKey("workspace_id", "lexeme")
    workspace_id = models.BigIntegerField()
    lexeme = models.TextField()
    chunk_ids = models.BinaryField(help_text="int64 chunk ids, ascending.")
    tfs = models.BinaryField(help_text="int16 term frequencies, one per chunk id.")
    lengths = models.BinaryField(help_text="int32 chunk lengths (BM25), one per chunk id.")
    postings = models.IntegerField()
    # Drawn from a sequence on every write: a process that cached the arrays of this
    # version may use them without reading them again.
    version = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.lexeme} in {self.workspace_id}: {self.postings}"


class DroppedChunk(models.Model):
    """A deleted chunk that a merged posting list may still hold: search skips it until
    the next merge takes it out. A trigger on retrieval_chunk writes these (migration
    0005), so every way a chunk is deleted, cascades included, records it."""

    pk = models.CompositePrimaryKey("workspace_id", "chunk_id")
    workspace_id = models.BigIntegerField()
    chunk_id = models.BigIntegerField()
    lexemes = ArrayField(models.TextField(), help_text="The lists it may be in.")

    def __str__(self) -> str:
        return f"{self.chunk_id} in {self.workspace_id}"


class IndexPart(models.Model):
    """A slice of a large document's chunks, embedded by a job of its own.

    A document with more chunks than one job should embed fans out into parts that
    any number of workers embed at once; its index job stores the chunks when the
    last part is done, from the vectors the parts staged.
    """

    document = models.ForeignKey("documents.Document", on_delete=models.CASCADE,
                                 related_name="index_parts")
    # The index job's generation that planned this part: an edit makes it stale.
    generation = models.PositiveIntegerField()
    ordinal = models.PositiveIntegerField()
    inputs = models.JSONField(help_text="The texts this part embeds.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "generation", "ordinal"],
                                    name="one_index_part_per_ordinal")
        ]

    def __str__(self) -> str:
        return f"{self.document_id} part {self.ordinal}"


class StagedVector(models.Model):
    """A vector embedded by an index part, waiting for its document's chunks."""

    part = models.ForeignKey(IndexPart, on_delete=models.CASCADE, related_name="vectors")
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.CASCADE, related_name="+")
    input_hash = models.CharField(max_length=64)
    embedding = VectorField()

    class Meta:
        indexes = [models.Index(fields=["space", "input_hash"], name="stagedvector_space_hash")]

    def __str__(self) -> str:
        return f"{self.input_hash[:12]} in {self.space_id}"
