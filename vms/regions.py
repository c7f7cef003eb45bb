"""Azure regions the simulation knows: display names and geo pairs. Pure data."""

REGIONS: dict[str, str] = {
    "westeurope": "West Europe",
    "northeurope": "North Europe",
    "swedencentral": "Sweden Central",
    "swedensouth": "Sweden South",
    "uksouth": "UK South",
    "ukwest": "UK West",
    "germanywestcentral": "Germany West Central",
    "germanynorth": "Germany North",
    "francecentral": "France Central",
    "francesouth": "France South",
    "eastus": "East US",
    "westus": "West US",
    "eastus2": "East US 2",
    "centralus": "Central US",
    "westus2": "West US 2",
    "westcentralus": "West Central US",
    "southeastasia": "Southeast Asia",
    "eastasia": "East Asia",
    "japaneast": "Japan East",
    "japanwest": "Japan West",
    "australiaeast": "Australia East",
    "australiasoutheast": "Australia Southeast",
    "usgovvirginia": "USGov Virginia",
    "usgovtexas": "USGov Texas",
}

# Geo pairs: never patched in the same rollout phase.
PAIRS: dict[str, str] = {}
for _a, _b in [
    ("westeurope", "northeurope"),
    ("swedencentral", "swedensouth"),
    ("uksouth", "ukwest"),
    ("germanywestcentral", "germanynorth"),
    ("francecentral", "francesouth"),
    ("eastus", "westus"),
    ("eastus2", "centralus"),
    ("westus2", "westcentralus"),
    ("southeastasia", "eastasia"),
    ("japaneast", "japanwest"),
    ("australiaeast", "australiasoutheast"),
    ("usgovvirginia", "usgovtexas"),
]:
    PAIRS[_a], PAIRS[_b] = _b, _a

REGION_CHOICES = list(REGIONS.items())


def normalize_region(value: str) -> str | None:
    """'West Europe', 'westeurope' and 'WestEurope' are the same region; None if unknown."""
    key = value.replace(" ", "").lower()
    return key if key in REGIONS else None


def is_government(region: str) -> bool:
    """Azure Government regions: listed, but hotpatch was not offered there (the seed)."""
    return region.startswith("usgov")
