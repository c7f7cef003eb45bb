"""`manage.py simulate`: what automatic patching and hotpatch do to a fleet over months, in throwaway data."""

from datetime import UTC, date, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings

from patching import catalog
from patching.orchestrator import fleets
from patching.orchestrator.simulation import Simulation, throwaway_database

MAX_DAYS = 5 * 366


def parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"'{value}' is not a date: use YYYY-MM-DD.") from None


class Command(BaseCommand):
    help = (
        "Run the real engine and automatic patching over a fleet on a simulated clock, in a throwaway "
        "in-memory database (your data is not touched), and report reboots, compliance, releases and halts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--start", required=True, help="First day, YYYY-MM-DD (the catalog starts 2023-01).")
        parser.add_argument("--end", required=True, help="Day after the last, YYYY-MM-DD.")
        parser.add_argument("--vms", type=int, help="Generate this many VMs (default: the demo fleet's mix).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the text report.")
        parser.add_argument("--seed", type=int, default=4, help="Seed of the generated fleet (default 4).")
        parser.add_argument(
            "--assessments", action="store_true", help="Also run periodic assessment (slower; changes no decision)."
        )
        parser.add_argument(
            "--resume-after-hours",
            type=float,
            default=24,
            help="An operator resumes a halted rollout after this many hours (default 24; 0: never).",
        )
        parser.add_argument("--failure-rate", type=float, help="Per-(VM, KB, day) installation failure rate.")
        parser.add_argument(
            "--scheduled",
            type=float,
            default=0,
            help="Share (0 to 1) of the Azure-orchestrated VMs put on a customer-managed schedule instead.",
        )
        parser.add_argument(
            "--recur",
            default="Month Second Tuesday Offset3",
            help="The schedule's recurEvery, e.g. 'Month Second Tuesday Offset3' (window 22:00 UTC, 3 h 55 min).",
        )

    def handle(
        self,
        *args,
        start,
        end,
        vms,
        json: bool,
        seed,
        assessments,
        resume_after_hours,
        failure_rate,
        scheduled,
        recur,
        **kw,
    ):
        first, last = parse_day(start), parse_day(end)
        if first >= last:
            raise CommandError("--end must be after --start.")
        if first < catalog.CATALOG_START:
            raise CommandError(f"The catalog starts {catalog.CATALOG_START}: choose a later --start.")
        if (last - first).days > MAX_DAYS:
            raise CommandError("Simulate at most five years at a time.")
        if vms is not None and not 1 <= vms <= 100_000:
            raise CommandError("--vms must be between 1 and 100000.")
        if failure_rate is not None and not 0 <= failure_rate <= 1:
            raise CommandError("--failure-rate must be between 0 and 1.")
        if resume_after_hours < 0:
            raise CommandError("--resume-after-hours must be 0 (never) or more.")
        if not 0 <= scheduled <= 1:
            raise CommandError("--scheduled must be between 0 and 1.")
        began, ended = (datetime(d.year, d.month, d.day, tzinfo=UTC) for d in (first, last))
        if vms:
            fleet = fleets.generated(vms, began, ended, seed=seed)
        else:  # the demo's machines that were off come back after 25 days, behind the baseline
            fleet = fleets.demo(began, ended, back_at=min(began + timedelta(days=25), ended - timedelta(hours=3)))
        overrides = {} if failure_rate is None else {"PORTAL_PATCH_FAILURE_RATE": failure_rate}
        with throwaway_database(), override_settings(**overrides):
            catalog.ensure_catalog(until=last + timedelta(days=31))
            simulation = Simulation(
                began,
                ended,
                fleet,
                assessments=assessments,
                resume_after=timedelta(hours=resume_after_hours) if resume_after_hours else None,
            )
            simulation.create_fleet()
            if scheduled:
                problems = simulation.schedule(scheduled, recur)
                if problems:
                    raise CommandError("; ".join(f"--recur: {p.message}" for p in problems))
            simulation.run()
            report = simulation.report()
        if json:
            self.stdout.write(__import__("json").dumps(report, indent=1))
        else:
            self.stdout.write(text_report(report))


def text_report(report: dict) -> str:
    summary = report["summary"]
    lines = [
        f"Simulated {report['start']} to {report['end']}: {len(report['vms'])} VMs, {report['rounds']} rounds of "
        f"automatic patching in {report['runtime_seconds']} s.",
        "",
        "Releases",
    ]
    by_month: dict[str, list[str]] = {}
    for release in report["releases"]:
        kind = release["kind"].replace("_", " ")
        by_month.setdefault(release["month"], []).append(f"{release['product']} {kind}")
    lines += [f"  {month}  {'; '.join(kinds)}" for month, kinds in sorted(by_month.items())]
    hp, other = summary["hotpatch"], summary["not_hotpatch"]
    lines += [
        "",
        "Reboots per VM-year (Azure-orchestrated, running throughout, rebootSetting not Never)",
        f"  hotpatch enrolled:   {hp['reboots_per_vm_year']} over {hp['vms']} VMs",
        f"  not enrolled:        {other['reboots_per_vm_year']} over {other['vms']} VMs",
        f"  reboots saved:       {summary['reboots_saved_per_vm_year']} per VM-year",
        *(
            [f"  customer schedule:   {sc['reboots_per_vm_year']} over {sc['vms']} VMs (maintenance configuration)"]
            if (sc := summary["customer_schedule"])["vms"]
            else []
        ),
        "",
        "Critical/Security updates outstanding (days at 23:59 UTC; out of compliance = more than 30 days)",
        f"  hotpatch enrolled:   {hp['days_outstanding_per_vm']} days outstanding per VM, "
        f"{hp['days_out_of_compliance']} VM-days out of compliance",
        f"  not enrolled:        {other['days_outstanding_per_vm']} days outstanding per VM, "
        f"{other['days_out_of_compliance']} VM-days out of compliance",
        *(
            [
                f"  customer schedule:   {sc['days_outstanding_per_vm']} days outstanding per VM, "
                f"{sc['days_out_of_compliance']} VM-days out of compliance"
            ]
            if sc["vms"]
            else []
        ),
        f"  whole fleet:         {summary['all_vms']['days_out_of_compliance']} VM-days out of compliance, by reason: "
        + (", ".join(f"{k} {v}" for k, v in sorted(summary["out_of_compliance_days_by_reason"].items())) or "none"),
        "",
        f"Rollouts halted: {len(report['halts'])}",
    ]
    for halt in report["halts"]:
        resumed = f"resumed {halt['resumed_at'][:16]}" if halt["resumed_at"] else "not resumed"
        lines.append(f"  {halt['month']} {halt['product']}: {halt['failed']}/{halt['attempted']} failed, {resumed}")
    lines += [
        "",
        f"{'VM':<12} {'product':<13} {'mode':<20} {'hotpatch':<8} {'reboots':>7} {'outstanding':>11} {'>30 days':>8}",
    ]
    for vm in report["vms"][:200]:
        lines.append(
            f"{vm['name']:<12} {vm['product']:<13} {vm['patch_mode']:<20} {'yes' if vm['hotpatch_enrolled'] else 'no':<8} "
            f"{vm['reboots']:>7} {vm['days_outstanding']:>11} {vm['days_out_of_compliance']:>8}"
        )
    if len(report["vms"]) > 200:
        lines.append(f"... and {len(report['vms']) - 200} more (--json lists them all)")
    return "\n".join(lines) + "\n"
