"""Synthetic German-like catalogs for benchmarks: rows in memory, or written as a workbook."""

from __future__ import annotations

import random
from pathlib import Path

import openpyxl

from producer.catalog import CatalogRow

HEADERS = ("sku", "name", "description", "model_name", "model_descr")
_GARMENTS = (
    "Kleid", "Bluse", "Hose", "Jeans", "Mantel", "Jacke", "Rock", "Pullover", "Strickjacke",
    "Hemd", "Stiefel", "Sneaker", "Schal", "Tasche", "Blazer", "Trenchcoat", "Kapuzenpullover",
)  # fmt: skip
_ADJECTIVES = (
    "schmal geschnittene", "weite", "taillierte", "gesteppte", "leichte", "warme", "elegante",
    "lässige", "klassische", "verspielte", "gerade", "hochgeschlossene", "knielange",
)  # fmt: skip
_COLOURS = (
    "marineblaue", "schwarze", "weiße", "cremefarbene", "rote", "olivgrüne", "beige",
    "graue", "bordeauxrote", "himmelblaue", "senfgelbe", "dunkelbraune",
)  # fmt: skip
_MATERIALS = (
    "aus Baumwolle", "aus Leinen", "aus Schurwolle", "aus Seide", "aus Denim", "aus Viskose",
    "aus recyceltem Polyester", "aus Glattleder", "aus Kaschmir", "aus Cord",
)  # fmt: skip
_DETAILS = (
    "mit verdeckter Knopfleiste", "mit Reißverschluss an der Seite", "mit aufgesetzten Taschen",
    "mit Stehkragen", "mit Puffärmeln", "mit Bindegürtel", "mit Kapuze", "mit Rippbündchen",
    "mit Kontrastnähten", "mit Schlitz hinten", "mit Knöpfen aus Horn", "mit Futter aus Satin",
)  # fmt: skip
_CARE = (
    "Maschinenwäsche bei 30 °C.", "Nur chemisch reinigen.", "Handwäsche empfohlen.",
    "Nicht im Trockner trocknen.", "Bügeln bei mittlerer Temperatur.",
)  # fmt: skip
_MODELS = ("Anna", "Lena", "Marie", "Sophie", "Jonas", "Felix", "Lukas", "Emma", "Mia", "Paul")


def _sentence(rng: random.Random) -> str:
    return (
        f"{rng.choice(_ADJECTIVES).capitalize()} {rng.choice(_COLOURS)} "
        f"{rng.choice(_GARMENTS)} {rng.choice(_MATERIALS)} {rng.choice(_DETAILS)}."
    )


def article_values(index: int, rng: random.Random) -> tuple[str, str, str, str, str]:
    """The cell values of one synthetic article.

    Args:
        index: the article's position, which makes its SKU unique.
        rng: the random source.

    Returns:
        (sku, name, description, model name, model description).
    """
    description = " ".join(_sentence(rng) for _ in range(rng.randint(2, 4)))
    description += f" {rng.choice(_CARE)}"
    model = rng.choice(_MODELS)
    size = rng.choice(("XS", "S", "M", "L", "XL"))
    height = rng.randint(165, 190)
    return (
        f"SKU-{index:06d}",
        f"{rng.choice(_COLOURS).capitalize()} {rng.choice(_GARMENTS)}",
        description,
        model,
        f"{model} ist {height} cm groß und trägt Größe {size}.",
    )


def synthetic_rows(count: int, seed: int = 0) -> list[CatalogRow]:
    """``count`` catalog rows as :func:`producer.catalog.read_catalog` would return them.

    Args:
        count: how many articles.
        seed: random seed, so that runs are comparable.

    Returns:
        The rows, numbered as if read from sheet ``Artikel`` of ``bench.xlsx``.
    """
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        key, name, description, model_name, model_descr = article_values(index, rng)
        rows.append(
            CatalogRow(
                "bench.xlsx", "Artikel", index + 2, key, name, description, model_name, model_descr
            )  # fmt: skip
        )
    return rows


def write_workbook(path: Path, count: int, seed: int = 0) -> Path:
    """Write ``count`` synthetic articles to an ``.xlsx`` workbook with a header row.

    Args:
        path: the file to write.
        count: how many articles.
        seed: random seed.

    Returns:
        ``path``.
    """
    rng = random.Random(seed)
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("Artikel")
    sheet.append(list(HEADERS))
    for index in range(count):
        sheet.append(list(article_values(index, rng)))
    workbook.save(path)
    return Path(path)
