"""Unicode spellings of corpus words: one word, one spelling.

A corpus word can be typed in several Unicode forms that look identical (``café`` as one code point ``é``, NFC,
or as ``e`` + a combining acute accent, NFD). Left as they are, the two spellings are two words: scored twice,
tokenized differently, and never reported as duplicates. :func:`rmvalues.data.corpora.read_corpus_file`
therefore normalises every word to **NFC** (the form of the published score files, of wordfreq's lists and of
ordinary text) as it reads a file, and writes the file's own spelling into the row's ``source`` (see
:func:`spelling_source`) so that :mod:`rmvalues.data.corpus_checks` can report it (:func:`file_spelling`).
"""

from __future__ import annotations

import ast
import re
import unicodedata

#: The normal form every corpus word is scored in.
FORM = "NFC"
_NOTE = f"normalised to {FORM} from "
_NOTE_RE = re.compile(re.escape(_NOTE) + r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def normalise(word: str) -> str:
    """``word`` in the normal form corpus words are scored in (:data:`FORM`)."""
    return unicodedata.normalize(FORM, word)


def spelling_source(source: str, spelling: str) -> str:
    """``source`` with a note naming the file's spelling of a normalised word, code points escaped
    (``"toy.csv (csv): normalised to NFC from 'cafe\\u0301'"``)."""
    return f"{source}: {_NOTE}{ascii(spelling)}"


def file_spelling(source: str | None) -> str | None:
    """The file's spelling of a word that was normalised (read back from the row's ``source``), else None."""
    m = _NOTE_RE.search(source or "")
    return ast.literal_eval(m.group(1)) if m else None


def form_name(spelling: str) -> str:
    """Which Unicode form a spelling is in: ``"NFD"``, ``"NFC"``, or ``"neither NFC nor NFD"``."""
    for form in ("NFD", "NFC"):
        if unicodedata.is_normalized(form, spelling):
            return form
    return "neither NFC nor NFD"


def describe(spelling: str) -> str:
    """A spelling as the reader can tell it apart: escaped code points and its form
    (``"'cafe\\u0301' (NFD)"``)."""
    return f"{ascii(spelling)} ({form_name(spelling)})"
