"""Files the tests read: the retailer's own seed sheets (no SKU column, repeated rows)."""

from pathlib import Path

SEED_CATALOG = Path(__file__).parent / "seed-catalog"
