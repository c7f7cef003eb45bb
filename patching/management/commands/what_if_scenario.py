"""`manage.py what_if_scenario SCENARIO`: one scenario of a what-if year, for patching.what_if.compare.

Internal: reads {"start", "days", "schedule", "machines"} as JSON on stdin (the schedule, a
what_if.schedule_window, only for the "scheduled" scenario), runs the fleet simulation in a
throwaway in-memory database (the configured database is not touched), prints "progress F" lines as
the simulated clock advances and a final "result {...}" line.
"""

import json
import sys
import time
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from patching import what_if


class Command(BaseCommand):
    help = "Internal (the what-if job): run one what-if scenario over machines read as JSON on stdin."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("scenario", choices=[*what_if.SCENARIOS, what_if.SCHEDULED])

    def handle(self, *args, scenario, **options):
        try:
            request = json.load(sys.stdin)
            machines = [what_if.Machine.from_json(m) for m in request["machines"]]
            first_day, days = date.fromisoformat(request["start"]), int(request["days"])
            schedule = request.get("schedule") or {}
        except (ValueError, KeyError, TypeError) as error:
            raise CommandError(f"Expected {{start, days, schedule, machines}} as JSON on stdin: {error}") from None
        if scenario == what_if.SCHEDULED and not schedule:
            raise CommandError("The scheduled scenario needs a schedule.")
        last = [0.0]

        def progress(fraction: float) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.5:
                last[0] = now
                self.stdout.write(f"progress {fraction:.4f}")
                self.stdout.flush()

        result = what_if.run_scenario(machines, scenario, first_day, days, progress, schedule)
        self.stdout.write("progress 1")
        self.stdout.write("result " + json.dumps(result))
