"""Rebuild each embedding space's HNSW index over half-precision vectors, with a denser
graph (see ``retrieval.spaces.embedding_space_index_create``).

The new index is built beside the old one without locking the table (CONCURRENTLY),
so search and indexing go on meanwhile: minutes for a million vectors.
"""

from collections.abc import Callable

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

_OLD = ("((embedding::vector({width})) vector_cosine_ops)", "")
_NEW = ("((embedding::halfvec({width})) halfvec_cosine_ops)",
        " WITH (m = 24, ef_construction = 200)")


def _rebuild(definition: tuple[str, str]
             ) -> Callable[[Apps, BaseDatabaseSchemaEditor], None]:
    def rebuild(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
        EmbeddingSpace = apps.get_model("retrieval", "EmbeddingSpace")
        columns, storage = definition
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '1GB'")
            try:
                for space in EmbeddingSpace.objects.order_by("pk"):
                    name = f"chunkvector_hnsw_{int(space.pk)}"
                    cursor.execute(
                        "SELECT to_regclass(%s) IS NOT NULL, "
                        "coalesce((SELECT indisvalid FROM pg_index "
                        "WHERE indexrelid = to_regclass(%s)), false)", [name, f"{name}_next"])
                    current, built = cursor.fetchone()
                    if not current and built:
                        # An interrupted run had built the new index and dropped the old.
                        cursor.execute(f"ALTER INDEX {name}_next RENAME TO {name}")
                        continue
                    if not current:
                        continue  # a retired space's vectors have no index
                    # An interrupted run may have left its half-built index behind.
                    cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_next")
                    cursor.execute(
                        f"CREATE INDEX CONCURRENTLY {name}_next ON retrieval_chunkvector "
                        f"USING hnsw {columns.format(width=int(space.dimensions))}{storage} "
                        f"WHERE space_id = {int(space.pk)}")
                    cursor.execute(f"DROP INDEX CONCURRENTLY {name}")
                    cursor.execute(f"ALTER INDEX {name}_next RENAME TO {name}")
            finally:
                cursor.execute("RESET maintenance_work_mem")
    return rebuild


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("retrieval", "0005_posting_lists"),
    ]

    operations = [
        migrations.RunPython(_rebuild(_NEW), _rebuild(_OLD)),
    ]
