"""manage.py create_api_token <username>: issue an API token and print it (only its hash is stored)."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from vms.models import ApiToken


class Command(BaseCommand):
    help = "Create a personal API token for the ARM API and print it. The token is shown only this once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for (default: 'Created with manage.py').")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Default: the token never expires.")

    def handle(self, *args, username: str, name: str, expires_in_days: int | None, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"There is no user '{username}'.") from None
        if not user.is_active:
            raise CommandError(f"The user '{username}' is inactive: a token of theirs would be refused.")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        _, secret = ApiToken.issue(user, name or "Created with manage.py", expires_at=expires_at)
        # Only the token on stdout, so that scripts can capture it: TOKEN=$(manage.py create_api_token demo)
        self.stdout.write(secret)
