"""Keyset pages over a list ordered `col ASC NULLS FIRST, name, pk` or its exact reverse.

A page continues from the key (col, name, pk) of the row before it (or after it, going back), so each
page is an index range scan whatever its depth, and rows added or removed meanwhile neither repeat nor
shift the rest. The rows after a key are read in at most three index ranges, in order, each only if
the page is not yet full: the rest of the key's own column value (col = c, (name, pk) after), the
values beyond it (col > c or col < c), then the NULLs if they come next. Each range is one index of
the order (col, name, pk), read forwards or backwards, so every query stops after a page of rows.

The position travels in the URL as a signed cursor: not readable as a row id, and a changed or forged
one is refused (None), for the page to say so and start again from the first page.
"""

from dataclasses import dataclass
from datetime import datetime

from django.core import signing
from django.db.models import F, Q, QuerySet

SALT = "portal.web.keyset"


@dataclass(frozen=True)
class Order:
    """One sort order of a list: its column, the tie-break name column (indexed next to it), the key."""

    column: str
    name: str
    descending: bool
    nullable: bool = True
    datetime: bool = False

    def by(self, *, forward: bool = True) -> list:
        """ORDER BY for reading forwards (the page order) or backwards (its exact reverse)."""
        up = (not self.descending) == forward  # the column's values grow as the walk goes on
        # Spelled as the indexes are (vms.models.sort_indexes): NULLS FIRST/LAST only where NULLs can be.
        nulls = {"nulls_first": True} if up else {"nulls_last": True}
        column = F(self.column).asc if up else F(self.column).desc
        column = column(**nulls) if self.nullable else column()
        # A descending order reverses the whole key (one index serves both directions).
        ties = [F(self.name).asc(), F("pk").asc()] if up else [F(self.name).desc(), F("pk").desc()]
        return [column, *ties]

    def ranges(self, key: tuple, *, forward: bool) -> list[Q]:
        """The rows strictly after `key` in the walk's direction, as ordered index ranges."""
        value, name, pk = key
        up = (not self.descending) == forward
        same = Q(**{f"{self.column}__isnull": True}) if value is None else Q(**{self.column: value})
        if up:
            # name >= n bounds the index scan; the OR only sorts out the rows of the same name.
            same &= Q(**{f"{self.name}__gte": name}) & (Q(**{f"{self.name}__gt": name}) | Q(pk__gt=pk))
        else:
            same &= Q(**{f"{self.name}__lte": name}) & (Q(**{f"{self.name}__lt": name}) | Q(pk__lt=pk))
        ranges = [same]
        if value is not None:
            ranges.append(Q(**{f"{self.column}__{'gt' if up else 'lt'}": value}))
        # NULLs come first in a walk towards growing values (ASC NULLS FIRST, or DESC NULLS LAST backwards).
        if self.nullable and value is None and up:
            ranges.append(Q(**{f"{self.column}__isnull": False}))
        elif self.nullable and value is not None and not up:
            ranges.append(Q(**{f"{self.column}__isnull": True}))
        return ranges

    def key_value(self, value):
        return value.isoformat() if self.datetime and value is not None else value

    def from_key_value(self, value):
        if value is None:
            return None
        if self.datetime:
            return datetime.fromisoformat(value) if isinstance(value, str) else _invalid()
        return value


def _invalid():
    raise ValueError("not a key of this order")


def read(items: QuerySet, order: Order, key: tuple | None, limit: int, *, forward: bool = True) -> list:
    """Up to `limit` rows after `key` (from the start without one) in the walk's order."""
    ordered = items.order_by(*order.by(forward=forward))
    if key is None:
        return list(ordered[:limit])
    rows: list = []
    for where in order.ranges(key, forward=forward):
        rows += ordered.filter(where)[: limit - len(rows)]
        if len(rows) >= limit:
            break
    return rows


def dump(context: str, order_name: str, key: tuple, position: int) -> str:
    """The signed cursor of `key` (the row at 0-based `position`) under the order named `order_name`."""
    return signing.dumps([context, order_name, list(key), position], salt=SALT, compress=True)


def load(raw: str, context: str, order_name: str, order: Order) -> tuple[tuple, int] | None:
    """(key, position) of a cursor made by dump for this list and order; None if it is not one."""
    try:
        made_for, name, key, position = signing.loads(raw[:2000], salt=SALT)
        if made_for != context or name != order_name or not isinstance(position, int) or len(key) != 3:
            return None
        value, row_name, pk = key
        if not isinstance(row_name, str) or not isinstance(pk, int) or isinstance(pk, bool):
            return None
        return (order.from_key_value(value), row_name, pk), max(position, 0)
    except (signing.BadSignature, ValueError, TypeError):
        return None
