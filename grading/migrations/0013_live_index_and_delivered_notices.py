"""queue_stats reads only the live states at any size.

- ``sub_live`` (queue, status, created_at) on the queued and dead-lettered submissions, and ``sub_leased`` with
  the queue beside each entry: their count and the oldest per queue and status from the indexes alone. Before,
  the same 2 250 rows were read through ``sub_status_updated`` and the table, one page per row once a
  semester's updates have scattered them. (On MySQL and MariaDB, which have neither partial indexes nor
  included columns, sub_leased gets its (status, lease_expires_at) back, as 0010 made it.)
- ``sub_failed`` gets the status as its second column, so that the failed and dead-lettered submissions with a
  failure reason are counted without the delivered notices kept beside them.
- The delivered failure notices (the rest of "could not be graded", which grows with the history kept) are a
  rolled-up counter, ``notices_delivered``, from now on. Here it starts from the events the roll-up has already
  passed (under the watermark's lock, so that no roll-up runs meanwhile): one for each failed -> delivered, less
  one for each requeue of a delivered notice. Later roll-ups add the rest.
"""

from django.db import migrations, models
from django.db.models import Count, OuterRef, Subquery

NAME = "notices_delivered"


def start_counter(apps, schema_editor):
    watermark = apps.get_model("grading", "MetricsWatermark")
    gap = apps.get_model("grading", "MetricGap")
    event = apps.get_model("grading", "SubmissionEvent")
    counter = apps.get_model("grading", "MetricCounter")
    mark = watermark.objects.select_for_update().filter(pk=1).first()
    if mark is None:
        return  # nothing rolled up yet: the first roll-up counts every event
    passed = event.objects.filter(pk__lte=mark.last_event_id).exclude(pk__in=gap.objects.values("event_id"))
    values: dict[int, int] = {}
    arrived = passed.filter(from_status="failed", to_status="delivered")
    for row in arrived.values("submission__queue_id").annotate(n=Count("id")).order_by():
        values[row["submission__queue_id"]] = row["n"]
    arrival = (
        event.objects.filter(submission_id=OuterRef("submission_id"), pk__lt=OuterRef("pk"), to_status="delivered")
        .exclude(from_status="delivered")
        .order_by("-pk")
        .values("from_status")[:1]
    )
    requeued = passed.filter(from_status="delivered", to_status="queued").annotate(came_from=Subquery(arrival))
    for row in requeued.filter(came_from="failed").values("submission__queue_id").annotate(n=Count("id")).order_by():
        queue_id = row["submission__queue_id"]
        values[queue_id] = values.get(queue_id, 0) - row["n"]
    counter.objects.filter(name=NAME).delete()
    counter.objects.bulk_create(
        [counter(queue_id=queue_id, name=NAME, value=float(n)) for queue_id, n in values.items() if n]
    )


def mysql_leased_index(apps, schema_editor):
    if schema_editor.connection.vendor == "mysql":
        schema_editor.execute(
            "ALTER TABLE grading_submission DROP INDEX sub_leased, ADD INDEX sub_leased (status, lease_expires_at)"
        )


def forget_counter(apps, schema_editor):
    apps.get_model("grading", "MetricCounter").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("grading", "0012_failed_index_with_id")]

    operations = [
        migrations.AddIndex(
            model_name="submission",
            index=models.Index(
                condition=models.Q(("status__in", ["queued", "dead_letter"])),
                fields=["queue", "status", "created_at"],
                name="sub_live",
            ),
        ),
        # Undone after sub_leased is back as Django makes it on MySQL (its status column restored).
        # (MySQL cannot roll DDL back: no transaction around these two.)
        migrations.RunPython(migrations.RunPython.noop, mysql_leased_index, atomic=False),
        migrations.RemoveIndex(model_name="submission", name="sub_leased"),
        migrations.AddIndex(
            model_name="submission",
            index=models.Index(
                condition=models.Q(("status", "pulled")),
                fields=["lease_expires_at"],
                include=("queue",),
                name="sub_leased",
            ),
        ),
        migrations.RunPython(mysql_leased_index, migrations.RunPython.noop, atomic=False),
        migrations.RemoveIndex(model_name="submission", name="sub_failed"),
        migrations.AddIndex(
            model_name="submission",
            index=models.Index(
                condition=models.Q(
                    ("status__in", ["failed", "delivered", "dead_letter"]),
                    models.Q(("failure_reason", ""), _negated=True),
                ),
                fields=["queue", "status", "id"],
                name="sub_failed",
            ),
        ),
        migrations.RunPython(start_counter, forget_counter),
    ]
