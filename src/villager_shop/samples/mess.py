"""How people type a name into a free-text column: the same value in case, spacing, zero-width and
no-break-space variants, blanks and NULLs. Every sample's generator and old application use it, so
both the loaded rows and the rows written during a migration are equally messy."""

from __future__ import annotations

import random

ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
NBSP = "\u00a0"
# Blank forms: no value at all for a lookup, or a title a rule quarantines.
BLANKS = ("", " ", "   ", "\t", NBSP, NBSP + " " + NBSP, "\u200b", " \u200b ")


def variant(rng: random.Random, clean: str) -> str:
    """One spelling of `clean` that means the same value (same key once normalized and case-folded)."""
    roll = rng.random()
    if roll < 0.55:
        return clean
    if roll < 0.65:
        return clean.lower()
    if roll < 0.72:
        return clean.upper()
    if roll < 0.80:
        return f"  {clean} "
    if roll < 0.86:
        return clean.replace(" ", "  ")
    if roll < 0.91:
        return clean.replace(" ", NBSP)
    if roll < 0.96:
        at = rng.randint(0, len(clean))
        return clean[:at] + rng.choice(ZERO_WIDTH) + clean[at:]
    return "\t" + clean.replace(" ", " \t")


def messy(rng: random.Random, clean: str, *, null: float = 0.03, blank: float = 0.02) -> str | None:
    """A spelling of `clean`, or now and then NULL or a blank that stands for no value."""
    roll = rng.random()
    if roll < null:
        return None
    if roll < null + blank:
        return rng.choice(BLANKS)
    return variant(rng, clean)
