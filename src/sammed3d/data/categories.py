"""The category catalogue: one canonical name per structure, found from its many spellings.

Datasets name the same structure differently ("liver"/"Liver"/"hepatic", "kidney_left"/
"left kidney"/"Kidney L", "Left-Hippocampus"/"Hippocampus_L"). The shipped table
``categories.csv`` (next to this module) lists canonical names (TotalSegmentator's where it
has one), their group and synonyms; :meth:`Catalogue.lookup` maps a name onto it:

1. the name is normalised (lower case, words joined by ``_``:
   :func:`sammed3d.data.cleaning.normalise_class_name`) and looked up among canonical names
   and synonyms, also without a plural ``s``/``es``;
2. otherwise a side word anywhere in it (``left``/``l``/``lt``/``lh``, ``right``/``r``/``rt``/
   ``rh``) is taken out, the rest is looked up and the side put back: ``"Kidney (L)"`` ->
   ``kidney_left``, ``"Left-Lateral-Ventricle"`` -> ``lateral_ventricle_left``,
   ``"left upper lobe"`` -> ``lung_upper_lobe_left`` (via the synonym ``upper_lobe_left``);
3. anything else is **unmapped**: ``None``, never a guess. ``sammed3d prepare`` keeps such a
   name as written (normalised) and reports it.

Paired structures (``paired`` column) are the ones curation step 4 splits into
``<name>_left``/``<name>_right`` (:data:`sammed3d.data.cleaning.PAIRED_STRUCTURES` holds the
same names); both sided names are categories of the catalogue, so a dataset that labels sides
itself and one split by step 4 end up in the same categories.

Example::

    >>> lookup_category("Kidney L"), lookup_category("arota"), lookup_category("tumour")
    ('kidney_left', 'aorta', None)
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sammed3d.data.cleaning import normalise_class_name

#: The shipped table.
CATALOGUE_FILE = Path(__file__).with_name("categories.csv")
SIDES = ("left", "right")
#: Side words recognised anywhere in a name (after normalisation).
SIDE_WORDS: dict[str, str] = {
    "left": "left",
    "l": "left",
    "lt": "left",
    "lh": "left",
    "right": "right",
    "r": "right",
    "rt": "right",
    "rh": "right",
}


@dataclass(frozen=True)
class Category:
    """One canonical category.

    Attributes:
        name: Canonical name (normalised form, e.g. ``"kidney_left"``).
        group: ``"abdomen"``, ``"thorax"``, ``"heart"``, ``"vessel"``, ``"bone"``,
            ``"muscle"``, ``"brain"``, ``"head_neck"``, ``"pelvis"`` or ``"lesion"``.
        paired: Split into ``_left``/``_right`` by curation step 4.
        synonyms: Normalised synonyms from the table.
        side_of: For ``<base>_left``/``<base>_right`` of a paired ``base``: ``base``.
    """

    name: str
    group: str
    paired: bool = False
    synonyms: tuple[str, ...] = ()
    side_of: str | None = None


class Catalogue:
    """Canonical categories and the index of their spellings.

    Args:
        categories: The categories; the sided names of paired ones are added when absent.
        source: Where they came from (for error messages).

    Raises:
        ValueError: a name that is not in normalised form, a category given twice, or one
            spelling that maps to two categories.
    """

    def __init__(self, categories: Iterable[Category], source: str = "catalogue") -> None:
        cats: dict[str, Category] = {}
        for cat in categories:
            if normalise_class_name(cat.name) != cat.name:
                raise ValueError(
                    f"{source}: category {cat.name!r} is not in normalised form "
                    f"({normalise_class_name(cat.name)!r})"
                )
            if cat.name in cats:
                raise ValueError(f"{source}: category {cat.name!r} appears twice")
            cats[cat.name] = cat
        for cat in list(cats.values()):
            if not cat.paired:
                continue
            for side in SIDES:
                name = f"{cat.name}_{side}"
                old = cats.get(name)
                cats[name] = Category(
                    name,
                    old.group if old else cat.group,
                    False,
                    old.synonyms if old else (),
                    side_of=cat.name,
                )
        self.categories: dict[str, Category] = dict(sorted(cats.items()))
        self._index: dict[str, str] = {}
        for cat in self.categories.values():
            for key in (cat.name, *cat.synonyms):
                other = self._index.setdefault(key, cat.name)
                if other != cat.name:
                    raise ValueError(
                        f"{source}: {key!r} names both {other!r} and {cat.name!r}; a spelling "
                        "may belong to one category only"
                    )
        self.source = source

    @classmethod
    def from_csv(cls, path: str | Path) -> Catalogue:
        """Read a table with the columns ``category``, ``group``, ``paired``, ``synonyms``.

        Lines starting with ``#`` are comments; ``paired`` is ``yes`` or empty; synonyms are
        separated by ``|`` and normalised.

        Raises:
            ValueError: a missing column, an empty or malformed entry (with the line).
        """
        path = Path(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        body = [(n, line) for n, line in enumerate(lines, 1) if not line.startswith("#")]
        reader = csv.DictReader(line for _, line in body)
        need = {"category", "group", "paired", "synonyms"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: expected the columns {sorted(need)}")
        cats: list[Category] = []
        for (n, _), row in zip(body[1:], reader, strict=False):
            where = f"{path} line {n}"
            paired = (row["paired"] or "").strip().lower()
            if paired not in ("", "yes"):
                raise ValueError(f"{where}: paired must be 'yes' or empty, got {paired!r}")
            try:
                synonyms = tuple(
                    normalise_class_name(s) for s in (row["synonyms"] or "").split("|") if s.strip()
                )
                name = (row["category"] or "").strip()
                if not name or not (row["group"] or "").strip():
                    raise ValueError("category and group must not be empty")
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            cats.append(Category(name, row["group"].strip(), paired == "yes", synonyms))
        return cls(cats, source=str(path))

    def __contains__(self, name: object) -> bool:
        return name in self.categories

    def __iter__(self) -> Iterator[Category]:
        return iter(self.categories.values())

    def __len__(self) -> int:
        return len(self.categories)

    def lookup(self, name: str) -> str | None:
        """Canonical category of ``name``, or ``None`` when the table does not know it."""
        try:
            key = normalise_class_name(name)
        except ValueError:
            return None
        hit = self._find(key)
        if hit is not None:
            return hit
        tokens = key.split("_")
        sides = {SIDE_WORDS[t] for t in tokens if t in SIDE_WORDS}
        if len(sides) != 1:
            return None
        side = sides.pop()
        base = "_".join(t for t in tokens if t not in SIDE_WORDS)
        if not base:
            return None
        hit = self._find(f"{base}_{side}")
        if hit is not None:
            return hit
        canonical = self._find(base)
        if canonical is not None and f"{canonical}_{side}" in self.categories:
            return f"{canonical}_{side}"
        return None

    def resolve(self, name: str) -> tuple[str, bool]:
        """``(category, mapped)``: the canonical name, or ``name`` normalised when unmapped.

        Raises:
            ValueError: ``name`` has no letters or digits.
        """
        hit = self.lookup(name)
        if hit is not None:
            return hit, True
        return normalise_class_name(name), False

    def _find(self, key: str) -> str | None:
        if key in self._index:
            return self._index[key]
        for plural in ("es", "s"):
            if key.endswith(plural) and key[: -len(plural)] in self._index:
                return self._index[key[: -len(plural)]]
        return None


@lru_cache(maxsize=1)
def default_catalogue() -> Catalogue:
    """The shipped catalogue (``categories.csv``), read once."""
    return Catalogue.from_csv(CATALOGUE_FILE)


@lru_cache(maxsize=1)
def catalogue_digest() -> str:
    """A short hash of the shipped table (recorded with prepared data)."""
    return hashlib.sha1(CATALOGUE_FILE.read_bytes()).hexdigest()[:12]


def lookup_category(name: str) -> str | None:
    """Canonical category of ``name`` in the shipped catalogue, or ``None`` (unmapped)."""
    return default_catalogue().lookup(name)


def resolve_category(name: str) -> tuple[str, bool]:
    """``(category, mapped)`` in the shipped catalogue (see :meth:`Catalogue.resolve`)."""
    return default_catalogue().resolve(name)
