"""MySQL and MariaDB only: utf8mb4 tables with a byte-for-byte collation, and the indexes partial ones stand for.

Nothing happens on PostgreSQL or SQLite, and the model state does not change.

- Character set and collation: whatever the database's default (MySQL 8.4's is utf8mb4_0900_ai_ci, where
  "A" = "a" = "á", and old installations have 3-byte utf8), gradequeue's tables get utf8mb4, so that
  4-byte characters are stored, with a binary NO PAD collation, so that lease keys, queue names and callback
  URLs compare byte for byte and "a" differs from "a " as it does on PostgreSQL and SQLite.
- Indexes: MySQL has no partial indexes, so Django creates sub_waiting as (queue_id, id) and sub_leased as
  (lease_expires_at) without their WHERE status = ...: a lease would then walk every submission of its queue
  already handed out before finding a waiting one. Here they get the status as a column instead.
"""

from django.db import migrations

INDEXES = {
    # name: (MySQL's column list, what Django made of the partial index)
    "sub_waiting": ("queue_id, status, id", "queue_id, id"),
    "sub_leased": ("status, lease_expires_at", "lease_expires_at"),
}


def binary_collation(connection):
    # MariaDB's and MySQL's names for utf8mb4, compared by code point, trailing spaces significant.
    return "utf8mb4_nopad_bin" if connection.mysql_is_mariadb else "utf8mb4_0900_bin"


def forwards(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "mysql":
        return
    collation = binary_collation(connection)
    with connection.cursor() as cursor:
        tables = [t for t in connection.introspection.table_names(cursor) if t.startswith("grading_")]
    for table in tables:
        schema_editor.execute(f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}")
    for name, (columns, _django) in INDEXES.items():
        schema_editor.execute(f"ALTER TABLE grading_submission DROP INDEX {name}, ADD INDEX {name} ({columns})")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "mysql":
        return
    for name, (_columns, django) in INDEXES.items():
        schema_editor.execute(f"ALTER TABLE grading_submission DROP INDEX {name}, ADD INDEX {name} ({django})")


class Migration(migrations.Migration):
    # MySQL cannot roll DDL back; each ALTER stands alone.
    atomic = False

    dependencies = [("grading", "0009_supersede_within_queue_and_account")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
