"""Rebuild each embedding space's HNSW index over half-precision vectors, with a denser
graph (see ``retrieval.spaces.embedding_space_index_create``).

The migration takes as long as building the index: minutes for a million vectors.
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
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
            for space in EmbeddingSpace.objects.order_by("pk"):
                name = f"chunkvector_hnsw_{int(space.pk)}"
                cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
                if not cursor.fetchone()[0]:
                    continue  # a retired space's vectors have no index
                columns, storage = definition
                cursor.execute(f"DROP INDEX {name}")
                cursor.execute(
                    f"CREATE INDEX {name} ON retrieval_chunkvector USING hnsw "
                    f"{columns.format(width=int(space.dimensions))}{storage} "
                    f"WHERE space_id = {int(space.pk)}")
    return rebuild


class Migration(migrations.Migration):

    dependencies = [
        ("retrieval", "0005_posting_lists"),
    ]

    operations = [
        migrations.RunPython(_rebuild(_NEW), _rebuild(_OLD)),
    ]
