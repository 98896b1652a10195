from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from grading.models import ApiToken
from grading.rest import tokens


class Command(BaseCommand):
    help = (
        "Issue a token of the JSON API (/api/v1/) for an account; it is printed once and stored hashed. "
        "Staff accounts' tokens act on every queue (operators); others see only the queues they are granted. "
        "Example: manage.py create_api_token ops --name exam-scripts --days 90"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("account", nargs="?", help="The account (username) the token acts as")
        parser.add_argument("--name", default="", help="What the token is for (shown by --list)")
        parser.add_argument("--days", type=float, default=None, help="Expire after this many days (default: never)")
        parser.add_argument("--revoke", metavar="PREFIX", help="Revoke the token that starts with PREFIX instead")
        parser.add_argument("--list", action="store_true", help="List the tokens (of the account, or all)")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["revoke"]:
            if tokens.revoke(opts["revoke"]) == 0:
                raise CommandError(f"No live token starts with {opts['revoke'][:12]!r}")
            self.stdout.write(f"Revoked {opts['revoke'][:12]}…")
            return
        if opts["list"]:
            rows = ApiToken.objects.select_related("user").order_by("created_at")
            if opts["account"]:
                rows = rows.filter(user__username=opts["account"])
            for row in rows:
                state = (
                    "revoked" if row.revoked_at else f"expires {row.expires_at:%Y-%m-%d}" if row.expires_at else "live"
                )
                self.stdout.write(f"{row.prefix}…  {row.user.get_username()}  {row.name or '-'}  {state}")
            return
        if not opts["account"]:
            raise CommandError("Name the account the token is for")
        if opts["days"] is not None and opts["days"] <= 0:
            raise CommandError("--days must be more than 0")
        user = get_user_model().objects.filter(username=opts["account"]).first()
        if user is None:
            raise CommandError(f"No account {opts['account']!r}; create it first (create_account or createsuperuser)")
        _row, token = tokens.issue(user, name=opts["name"], days=opts["days"])
        self.stderr.write("The token is shown once; it is stored hashed and cannot be shown again.")
        self.stdout.write(token)
