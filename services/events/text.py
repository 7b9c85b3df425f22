"""Text folding shared by the write side (categories) and the search index (name tokens).

Folding is NFKD + drop combining marks + casefold, so "Música", "MUSICA" and "música" are one word.
"""

from __future__ import annotations

import re
import unicodedata

# Prefixes longer than this are not indexed; a longer query word is cut to it (a rare over-match).
MAX_PREFIX = 24
MAX_QUERY_WORDS = 8
_WORD = re.compile(r"[^\W_]+")
_SPACES = re.compile(r"\s+")


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def words(text: str) -> list[str]:
    """Searchable words in order of first appearance, without repeats."""
    return list(dict.fromkeys(_WORD.findall(fold(text))))


def prefixes(text: str) -> set[str]:
    """Every prefix (1..MAX_PREFIX chars) of every word: what the token index stores."""
    return {word[:n] for word in words(text) for n in range(1, min(len(word), MAX_PREFIX) + 1)}


def query_words(q: str) -> list[str]:
    """The words of a search: each must prefix-match a word of the name."""
    return [word[:MAX_PREFIX] for word in words(q)][:MAX_QUERY_WORDS]


def normalize_category(text: str) -> str:
    """Categories are free text compared folded: lowercase, no accents, single spaces."""
    return _SPACES.sub(" ", fold(text)).strip()
