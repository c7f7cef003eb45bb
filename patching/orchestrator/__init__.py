"""Automatic VM guest patching: periodic assessment and availability-first rollouts (SPEC §3.5).

- `rules`      the configured rules (off-peak window, rollout phases, batch sizes, halting), parsed and
               validated once; pure, so settings.py can refuse a bad value at startup.
- `needs`      what automatic patching would install on a VM now, and what it holds back; pure.
- `planner`    the batching decision: given a fleet snapshot, the time and the rules, which VMs start
               now and a reason for every VM that does not; pure.
- `engine`     the database side: reads the snapshot set-based, opens halts, records decisions, starts
               operations through services.queue_operations. The beat tasks and the simulation call it.
- `simulation` the same engine over a simulated clock (`manage.py simulate`, the demo's history).

This package imports nothing from Django's models at import time, so `rules` is importable from
settings.py; import the other modules directly.
"""
