"""What automatic patching would install: the same as the guest's own rules, from three timestamps.

The engine reads a VM's installed updates as three timestamps (newest Windows update, newest .NET
update, newest baseline) instead of the whole list. Over random installed sets drawn from the real
catalog, the Critical and Security updates it finds (to install now or to hold) are exactly those
patching.guest.applicable finds from the real set.
"""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patching import guest as sim
from patching.orchestrator import engine
from patching.orchestrator.needs import GuestSummary, need
from tests.factories import load_catalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogs(django_db_blocker):
    load_catalog()
    return engine.load_catalogs()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_summary_finds_what_the_guest_would_offer(catalogs, data):
    product = data.draw(st.sampled_from(["ws2022-azure", "ws2025-azure", "ws2022", "ws2019"]))
    catalog = catalogs[product]
    now = datetime(2024, 11, 1, tzinfo=UTC) + timedelta(days=data.draw(st.integers(0, 700)))
    released = [p for p in catalog.patches if p.published_at <= now]
    recent = released[-25:]  # what a VM has installed lately decides what applies next
    picks = st.lists(st.sampled_from(recent), max_size=12, unique_by=lambda p: p.id) if recent else st.just([])
    installed = frozenset(p.id for p in data.draw(picks))
    latest_baseline = sim.latest_baseline(catalog.patches, now)
    if latest_baseline and data.draw(st.booleans()):  # the interesting case: the latest baseline is in
        installed |= {latest_baseline.id}
    baselines = [p.id for p in released if p.kind in sim.BASELINE_KINDS and p.id in installed]
    baseline_id = data.draw(st.sampled_from([None, *baselines]))
    enrolled = product.endswith("azure") and data.draw(st.booleans())
    catch_up = data.draw(st.booleans())

    def newest(kinds):
        return max((p.published_at for p in released if p.id in installed and p.kind in kinds), default=None)

    summary = GuestSummary(
        product, enrolled, baseline_id, newest(sim.WINDOWS_KINDS), newest({"dotnet"}), newest(sim.BASELINE_KINDS)
    )
    found = need(summary, catalog, now, catch_up=catch_up)
    guest = sim.Guest(enrolled, "", baseline_id, installed)
    expected = {p.kb for p in sim.applicable(guest, catalog.patches, now) if p.is_critical_or_security}
    assert set(found.kbs) | set(found.held) == expected
    assert not set(found.kbs) & set(found.held)
    if enrolled and found.kbs and not any(p.kind in sim.BASELINE_KINDS for p in released if p.kb in found.kbs):
        # Outside a baseline month an enrolled VM installs nothing that reboots.
        assert not found.reboots and found.exclude_reboot == bool(found.held)
