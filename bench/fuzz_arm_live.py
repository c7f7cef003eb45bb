"""Fuzz a running portal's ARM API over real HTTP with the schemathesis CLI, every check on.

tests/test_arm_fuzz.py fuzzes in-process with a chosen set of checks; this goes through the whole
stack (gunicorn, the middleware, the real database and worker) with all of schemathesis' checks and
phases, stateful ones included. It changes data (creates, updates and deletes VMs, starts
operations, registers features): point it at a throwaway portal, e.g. `make demo` with
PORTAL_VAR_DIR=/tmp/fuzz-portal.

    python bench/fuzz_arm_live.py --url http://127.0.0.1:8000 --token "$(python manage.py create_api_token demo)"

Path parameters are drawn, part of the time, from the token's own subscriptions, resource groups and
VMs (read through the API first), so the fuzzer gets past the 404s. Requests go to the given URL only.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path


def get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the portal under test)
        return json.load(response)


def toml_list(values) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the portal (without /arm)")
    parser.add_argument("--token", required=True, help="an API token of a user with a Contributor role")
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--probability", type=float, default=0.7, help="how often a real name is used")
    args, extra = parser.parse_known_args()

    arm = args.url.rstrip("/") + "/arm"
    subscriptions = [
        s["subscriptionId"] for s in get(f"{arm}/subscriptions?api-version=2022-12-01", args.token)["value"]
    ]
    groups, vms = set(), set()
    for sub in subscriptions:
        for vm in get(
            f"{arm}/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines?api-version=1", args.token
        )["value"]:
            groups.add(vm["id"].split("/")[4])
            vms.add(vm["name"])
    dictionaries = {
        "subscriptions": subscriptions,
        "groups": sorted(groups),
        "vms": sorted(vms)[:50],
        "namespaces": ["Microsoft.Compute", "Microsoft.Features"],
        "features": ["InGuestHotPatchVMPreview", "InGuestAutoPatchVMPreview", "InGuestPatchVMPreview"],
        "locations": ["westeurope", "northeurope", "eastus"],
    }
    bindings = {
        "path.subscriptionId": "subscriptions",
        "path.resourceGroupName": "groups",
        "path.vmName": "vms",
        "path.providerNamespace": "namespaces",
        "path.featureName": "features",
        "path.location": "locations",
    }
    config = "".join(
        f"[dictionaries.{name}]\nvalues = {toml_list(values)}\n\n" for name, values in dictionaries.items()
    )
    config += "[parameters]\n" + "".join(
        f'"{key}" = {{ dictionary = "{name}", probability = {args.probability} }}\n' for key, name in bindings.items()
    )
    # ARM ignores query parameters it does not know, as real ARM does.
    config += "\n[generation]\nallow-extra-parameters = false\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "schemathesis.toml"
        path.write_text(config)
        command = [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(path),
            "run",
            f"{arm}/openapi.json",
            "--header",
            f"Authorization: Bearer {args.token}",
            "--max-examples",
            str(args.max_examples),
            *extra,
        ]
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
