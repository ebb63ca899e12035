"""Jobs queued before jobs knew their workspace get their document's, so that an upgrade
keeps them in their workspace's turn rather than behind everyone's."""

from django.db import migrations

FILL = """
UPDATE jobs_job AS j SET workspace_id = d.workspace_id
FROM documents_document AS d
WHERE j.workspace_id IS NULL AND j.kind IN ('documents.index', 'documents.summary')
  AND j.object_id = d.id;
UPDATE jobs_job AS j SET workspace_id = d.workspace_id
FROM retrieval_indexpart AS p JOIN documents_document AS d ON d.id = p.document_id
WHERE j.workspace_id IS NULL AND j.kind = 'documents.index_part' AND j.object_id = p.id;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("documents", "0003_document_summary"),
        ("jobs", "0003_job_workspace"),
        ("retrieval", "0003_index_parts"),
    ]

    operations = [migrations.RunSQL(FILL, reverse_sql=migrations.RunSQL.noop)]
