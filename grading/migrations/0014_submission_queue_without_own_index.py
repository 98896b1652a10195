"""grading_submission.queue_id loses the index of its own that its foreign key came with (see Submission.queue).

Only the index goes: Django's own AlterField would drop the foreign key and add it back, which checks every
row under a lock that stops writes (seconds with a semester kept). The foreign key stays. On MySQL/MariaDB
InnoDB keeps an index for every foreign key and Django made none of its own there: nothing to do.
"""

import django.db.models.deletion
from django.db import migrations, models


def drop_queue_index(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "mysql":
        return
    Submission = apps.get_model("grading", "Submission")
    table = Submission._meta.db_table
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    for name, info in constraints.items():
        if info["index"] and not info["primary_key"] and not info["unique"] and info["columns"] == ["queue_id"]:
            schema_editor.execute(schema_editor.sql_delete_index % {"table": schema_editor.quote_name(table), "name": schema_editor.quote_name(name)})


def add_queue_index(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "mysql":
        return
    Submission = apps.get_model("grading", "Submission")
    field = Submission._meta.get_field("queue")
    name = schema_editor._create_index_name(Submission._meta.db_table, [field.column])
    schema_editor.execute(
        f"CREATE INDEX {schema_editor.quote_name(name)} ON {schema_editor.quote_name(Submission._meta.db_table)} "
        f"({schema_editor.quote_name(field.column)})"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("grading", "0013_live_index_and_delivered_notices"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="submission",
                    name="queue",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="submissions",
                        to="grading.queue",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_queue_index, add_queue_index)],
        ),
    ]
