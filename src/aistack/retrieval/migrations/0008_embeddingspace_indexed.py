"""Spaces record whether their HNSW index is built: it is built once a space outgrows
exact scans, no longer with the space. The spaces that have a valid index say so."""

from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def _indexed_recorded(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    EmbeddingSpace = apps.get_model("retrieval", "EmbeddingSpace")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_class c JOIN pg_index i "
                       "ON i.indexrelid = c.oid WHERE c.relname LIKE 'chunkvector_hnsw_%%' "
                       "AND i.indisvalid")
        valid = {name for (name,) in cursor.fetchall()}
    for space in EmbeddingSpace.objects.all():
        if f"chunkvector_hnsw_{int(space.pk)}" in valid:
            EmbeddingSpace.objects.filter(pk=space.pk).update(indexed=True)


class Migration(migrations.Migration):

    dependencies = [
        ("retrieval", "0007_retired_spaces_are_not_reused"),
    ]

    operations = [
        migrations.AddField(
            model_name="embeddingspace",
            name="indexed",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(_indexed_recorded, migrations.RunPython.noop),
    ]
