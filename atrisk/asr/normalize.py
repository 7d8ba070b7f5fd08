"""The one text normalisation of ASR fine-tuning and evaluation.

Both :mod:`atrisk.asr.finetune` (the training targets and the character
vocabulary) and :mod:`atrisk.asr.evaluate` (references *and* hypotheses before
WER/CER) call :func:`normalize_text`, so that a model is scored on exactly the
text it was trained to write.  The rules, in order:

1. Unicode NFKC (full-width forms, ligatures and the like become plain characters),
   then lower case.
2. Typographic apostrophes (``’ ‘ ʼ``) become ``'``.
3. Bracketed annotations - ``[noise]``, ``<unk>``, ``(laughs)``, ``{breath}`` - are removed.
4. Hyphens, dashes, slashes and underscores become spaces (``well-known`` ->
   ``well known``).
5. Every other character that is not a letter, a digit, ``'`` or whitespace is
   removed (``.,;:!?"`` ...).
6. Apostrophes not inside a word are removed (``'cause`` -> ``cause``,
   ``students'`` -> ``students``; ``don't`` stays).
7. Runs of whitespace become one space; leading and trailing spaces go.

Digits are kept as digits (``"2"`` and ``"two"`` are different words): transcribe
numbers the way your recogniser writes them.

Example:
    >>> normalize_text("Well-known  [noise] FACTS, aren’t they?")
    "well known facts aren't they"
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_BRACKETED = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)|\{[^}]*\}")
_SEPARATORS = re.compile(r"[-\u2010-\u2015_/\\]+")
_NOT_KEPT = re.compile(r"[^\w'\s]+|_")
_EDGE_APOSTROPHE = re.compile(r"(?<!\w)'+|'+(?!\w)")
_SPACES = re.compile(r"\s+")


def normalize_text(text: object) -> str:
    """Normalise a transcript for ASR training and scoring (rules in the module docstring).

    Args:
        text: A transcript (anything ``str()`` accepts; ``None`` counts as empty).

    Returns:
        Lower-case words separated by single spaces; ``""`` when nothing is left.
    """
    if text is None:
        return ""
    t = unicodedata.normalize("NFKC", str(text)).lower().translate(_APOSTROPHES)
    t = _BRACKETED.sub(" ", t)
    t = _SEPARATORS.sub(" ", t)
    t = _NOT_KEPT.sub("", t)
    t = _EDGE_APOSTROPHE.sub("", t)
    return _SPACES.sub(" ", t).strip()
