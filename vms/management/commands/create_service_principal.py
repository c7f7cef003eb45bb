"""manage.py create_service_principal: an app registration for the Azure CLI, printed once."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from vms import principals
from vms.models import Role, Subscription


class Command(BaseCommand):
    help = (
        "Create a service principal with a role on subscriptions its owner owns, and print its client id, "
        "secret (shown only this once) and the tenant, for `az login --service-principal`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="What it is for, e.g. 'ci'.")
        parser.add_argument(
            "--subscription",
            action="append",
            required=True,
            dest="subscriptions",
            help="Subscription GUID or display name (repeatable); the owner must be Owner on each.",
        )
        parser.add_argument("--role", default=Role.CONTRIBUTOR.value, choices=Role.values)
        parser.add_argument("--owner", required=True, help="The username creating it (an Owner of each subscription).")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Default: it never expires.")

    def handle(self, *args, name, subscriptions, role, owner, expires_in_days, **options):
        User = get_user_model()
        try:
            creator = User.objects.get(**{User.USERNAME_FIELD: owner})
        except User.DoesNotExist:
            raise CommandError(f"There is no user '{owner}'.") from None
        if not creator.is_active:
            raise CommandError(f"The user '{owner}' is inactive.")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        found = [self.subscription(s) for s in subscriptions]
        for subscription in found:
            if not principals.owns(creator, subscription):
                raise CommandError(f"'{owner}' is not an Owner of '{subscription}' ({subscription.pk}).")
        first, *others = found
        principal, secret = principals.create(
            creator, name, first, role, expires_at=principals.expires_at(expires_in_days)
        )
        for subscription in others:
            principals.grant(creator, principal, subscription, role)
        tenant = settings.PORTAL_TENANT_ID
        self.stdout.write(f"client id: {principal.client_id}")
        self.stdout.write(f"secret:    {secret}")
        self.stdout.write(f"tenant:    {tenant}")
        self.stdout.write(f"role:      {role} on {', '.join(f'{s} ({s.pk})' for s in found)}")
        self.stdout.write(
            f"Sign in:   az login --service-principal -u {principal.client_id} -p {secret} --tenant {tenant}"
        )
        self.stderr.write("The secret is shown only this once: only its hash is kept.")

    def subscription(self, value: str) -> Subscription:
        import uuid

        try:
            return Subscription.objects.get(pk=uuid.UUID(value))
        except (ValueError, Subscription.DoesNotExist):
            pass
        matches = list(Subscription.objects.filter(display_name=value)[:2])
        if len(matches) != 1:
            raise CommandError(
                f"No subscription '{value}'." if not matches else f"More than one subscription is called '{value}'."
            )
        return matches[0]
