"""Where uploaded originals are kept: PostgreSQL by default, or an S3-compatible bucket.

Either way every web and worker process reads the same originals through
``DATABASE_URL`` (or the bucket) alone: a worker on another machine, with a data
directory of its own, parses what a web process took in. Originals stored by releases
that kept them under ``AISTACK_HOME/media`` are read from there until copied in (the
``documents`` migration 0005 copies them on upgrade).
"""

from __future__ import annotations

import os
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage
from django.db import IntegrityError, transaction
from django.utils.deconstruct import deconstructible

from aistack.transactions import after_commit

_SAVE_ATTEMPTS = 5


@deconstructible
class DatabaseStorage(Storage):
    """Files as rows of ``documents.StoredFile``: written, read and deleted in the
    caller's transaction, so a document and its original come and go together."""

    # Deleted inside the transaction that deletes the document (see ``signals``).
    transactional = True

    def _legacy(self) -> FileSystemStorage:
        return FileSystemStorage(location=settings.MEDIA_ROOT)

    def _open(self, name: str, mode: str = "rb") -> File[Any]:
        from aistack.documents.models import StoredFile

        content = StoredFile.objects.filter(name=name).values_list("content", flat=True).first()
        if content is not None:
            return ContentFile(bytes(content), name=name)
        legacy = self._legacy()
        if legacy.exists(name):
            return legacy.open(name, mode)
        raise FileNotFoundError(f"no stored file named {name!r}")

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        """Return ``name`` with a random part, whether or not it is taken: an upload being
        saved elsewhere is invisible until it commits, and an original an earlier
        release kept on another host's disk cannot be seen from here at all."""
        root, ext = os.path.splitext(name)
        return super().get_available_name(self.get_alternative_name(root, ext),
                                          max_length=max_length)

    def _save(self, name: str, content: IO[bytes] | File[Any]) -> str:
        from aistack.documents.models import StoredFile

        if hasattr(content, "seek"):
            content.seek(0)
        chunks = content.chunks() if isinstance(content, File) else iter(lambda: content.read(
            1 << 20), b"")
        data = b"".join(chunks)
        for _ in range(_SAVE_ATTEMPTS):
            try:
                with transaction.atomic():
                    StoredFile.objects.create(name=name, content=data, size=len(data))
            except IntegrityError:  # taken meanwhile by an upload saved at the same time
                name = self.get_available_name(self._root_name(name))
                continue
            return name
        raise FileExistsError(f"no free name for {name!r}")

    @staticmethod
    def _root_name(name: str) -> str:
        # "notes_Ab3dE9x.md" back to "notes.md" before another random part is added.
        root, ext = os.path.splitext(name)
        return f"{root.rpartition('_')[0] or root}{ext}"

    def exists(self, name: str) -> bool:
        from aistack.documents.models import StoredFile

        return StoredFile.objects.filter(name=name).exists() or self._legacy().exists(name)

    def delete(self, name: str) -> None:
        from aistack.documents.models import StoredFile

        StoredFile.objects.filter(name=name).delete()
        legacy = self._legacy()
        if legacy.exists(name):
            # A file cannot be rolled back: it goes once the deletion has committed.
            after_commit(legacy.delete, name)

    def size(self, name: str) -> int:
        from aistack.documents.models import StoredFile

        size = StoredFile.objects.filter(name=name).values_list("size", flat=True).first()
        return size if size is not None else self._legacy().size(name)

    def url(self, name: str | None) -> str:
        raise NotImplementedError("originals are not served by URL")
