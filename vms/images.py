"""Products and the marketplace images that carry them (SPEC §3.1). Pure data, no ORM."""

from dataclasses import dataclass

PUBLISHER = "MicrosoftWindowsServer"
OFFER = "WindowsServer"


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    build_major: int
    # The name Microsoft's release-history page uses for this product's monthly cumulative updates.
    release_history_name: str
    # The name of the product in the hotpatch calendar, if it is in the hotpatch programme.
    hotpatch_calendar_name: str | None
    skus: tuple[str, ...]
    hotpatch_skus: tuple[str, ...]

    @property
    def has_hotpatch(self) -> bool:
        return bool(self.hotpatch_skus)

    @property
    def default_sku(self) -> str:
        return (self.hotpatch_skus or self.skus)[0]


PRODUCTS: dict[str, Product] = {
    p.code: p
    for p in [
        Product(
            code="ws2025-azure",
            name="Windows Server 2025 Datacenter: Azure Edition",
            build_major=26100,
            release_history_name="Windows Server 2025",
            hotpatch_calendar_name="Windows Server 2025 Datacenter: Azure Edition",
            skus=(
                "2025-datacenter-azure-edition",
                "2025-datacenter-azure-edition-smalldisk",
                "2025-datacenter-azure-edition-core",
                "2025-datacenter-azure-edition-core-smalldisk",
            ),
            hotpatch_skus=(
                "2025-datacenter-azure-edition",
                "2025-datacenter-azure-edition-smalldisk",
                "2025-datacenter-azure-edition-core",
                "2025-datacenter-azure-edition-core-smalldisk",
            ),
        ),
        Product(
            code="ws2022-azure",
            name="Windows Server 2022 Datacenter: Azure Edition",
            build_major=20348,
            release_history_name="Windows Server 2022",
            hotpatch_calendar_name="Windows Server 2022 Datacenter: Azure Edition",
            skus=(
                "2022-datacenter-azure-edition",
                "2022-datacenter-azure-edition-smalldisk",
                "2022-datacenter-azure-edition-core",
                "2022-datacenter-azure-edition-core-smalldisk",
                "2022-datacenter-azure-edition-hotpatch",
                "2022-datacenter-azure-edition-hotpatch-smalldisk",
            ),
            hotpatch_skus=(
                "2022-datacenter-azure-edition-hotpatch",
                "2022-datacenter-azure-edition-hotpatch-smalldisk",
                "2022-datacenter-azure-edition-core",
                "2022-datacenter-azure-edition-core-smalldisk",
            ),
        ),
        Product(
            code="ws2022",
            name="Windows Server 2022 Datacenter",
            build_major=20348,
            release_history_name="Windows Server 2022",
            hotpatch_calendar_name=None,
            skus=("2022-datacenter", "2022-datacenter-smalldisk", "2022-datacenter-g2"),
            hotpatch_skus=(),
        ),
        Product(
            code="ws2019",
            name="Windows Server 2019 Datacenter",
            build_major=17763,
            release_history_name="Windows Server 2019",
            hotpatch_calendar_name=None,
            skus=("2019-datacenter", "2019-datacenter-smalldisk", "2019-datacenter-gensecond"),
            hotpatch_skus=(),
        ),
    ]
}

PRODUCT_CHOICES = [(p.code, p.name) for p in PRODUCTS.values()]


def product_for_image(publisher: str, offer: str, sku: str) -> Product | None:
    """The product an image reference installs, or None for images we don't simulate."""
    if publisher.lower() != PUBLISHER.lower() or offer.lower() != OFFER.lower():
        return None
    sku = sku.lower()
    for product in PRODUCTS.values():
        if sku in product.skus:
            return product
    return None


def is_hotpatch_capable(publisher: str, offer: str, sku: str) -> bool:
    """The DOC-HP table: exact publisher/offer/sku, sku compared case-insensitively."""
    product = product_for_image(publisher, offer, sku)
    return product is not None and sku.lower() in product.hotpatch_skus


ALL_SKUS = [sku for p in PRODUCTS.values() for sku in p.skus]
