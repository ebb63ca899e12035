"""English stems in this process, as PostgreSQL's ``english`` configuration makes them:
words split as its parser splits plain words, stemmed by the same Snowball algorithm.

Used only where a disagreement (a few words in a thousand, where the two builds of the
stemmer differ, and PostgreSQL's stop words, kept here) costs no more than a posting
list sent again or a word of a snippet left unmarked: rankings use PostgreSQL's lexemes.
"""

from __future__ import annotations

import re
import threading

import Stemmer

# A plain word, as PostgreSQL's parser makes one: letters and digits (an underscore, an
# apostrophe or a hyphen separates two words).
WORD = re.compile(r"[^\W_]+")

# A stemmer keeps a cache and is not safe to share between threads.
_local = threading.local()


def stems_of(words: list[str]) -> list[str]:
    """Return the English stem of each (lower case) word."""
    stemmer: Stemmer.Stemmer | None = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    found: list[str] = stemmer.stemWords(words)
    return found


def text_stems(text: str) -> set[str]:
    """Return the English stems of the words of ``text``."""
    return set(stems_of([word.lower() for word in WORD.findall(text)]))
