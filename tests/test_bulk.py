"""bulk's values, prepared once per distinct value, are what each field prepares value by value."""

from datetime import UTC, datetime, timedelta, timezone

from django.db import connection

from patching import bulk
from patching.models import GuestState, Operation


def test_values_prepared_once_per_distinct_value_are_prepared_as_each_field_does():
    at = datetime(2025, 3, 11, 22, tzinfo=UTC)
    same_instant = at.astimezone(timezone(timedelta(hours=1)))
    columns = {
        Operation._meta.get_field("created_at"): [at, same_instant, at, None, at + timedelta(seconds=1)],
        Operation._meta.get_field("parameters"): [{"a": 1}, {"a": 1}, {}, None, [1, True]],
        Operation._meta.get_field("failed_count"): [1, True, 1, 0, False],
        Operation._meta.get_field("kind"): ["installation", "installation", "assessment", "installation", ""],
        GuestState._meta.get_field("reboot_pending"): [True, 1, False, 0, None],
    }
    for field, values in columns.items():
        expected = [field.get_db_prep_value(v, connection) for v in values]
        assert list(map(comparable, bulk._prepared_column(field, values))) == list(map(comparable, expected))


def comparable(prepared):
    """The type too (True is not 1); PostgreSQL's JSON wrapper by what it wraps (it compares by identity)."""
    return type(prepared), getattr(prepared, "obj", prepared)
