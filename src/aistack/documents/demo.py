"""Sample documents for a first look at the product."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth.models import User
from django.db import transaction

from aistack.accounts.permissions import default_workspace
from aistack.documents.models import Document
from aistack.documents.services import document_create

DEMO_DIR = Path(__file__).parent / "demo_documents"


@transaction.atomic
def demo_load() -> int:
    """Add the sample documents to the first admin's workspace once; return how many."""
    admin = User.objects.filter(is_superuser=True).order_by("pk").first()
    if admin is None:
        return 0
    workspace = default_workspace(user=admin)
    loaded = 0
    for path in sorted(DEMO_DIR.glob("*.md")):
        title, _, body = path.read_text().partition("\n")
        title = title.lstrip("# ").strip()
        if Document.objects.filter(workspace=workspace, title=title).exists():
            continue
        document_create(workspace=workspace, title=title, content=body.strip(), author=admin)
        loaded += 1
    return loaded
