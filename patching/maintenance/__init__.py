"""Maintenance configurations: customer-managed schedules (Azure's Microsoft.Maintenance, InGuestPatch).

recurrence.py (pure: recurEvery, windows, occurrences), timezones.py (Windows names -> IANA),
models.py, scope.py (who is in scope, set-based), services.py (validation, assignments, runs:
`run_due(now)` is the scheduler's one step), webhooks.py (pre/post events), tasks.py (Celery).
"""
