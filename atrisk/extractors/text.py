"""Text features of each session: linguistic counters per speaker + interaction counters.

:func:`text_features` is the one function that both ``atrisk features text`` and
``atrisk extract`` call.  It returns one row per session with the columns
``teacher_<linguistic column>``, ``student_<linguistic column>`` and
``inter_<interaction column>`` (:data:`TEXT_FEATURE_COLUMNS`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pandas as pd

from atrisk.config import TextConfig
from atrisk.extractors.interaction import INTERACTION_COLUMNS, InteractionExtractor
from atrisk.extractors.linguistic import LINGUISTIC_COLUMNS, LinguisticExtractor
from atrisk.records import TRACKS

#: Columns of :func:`text_features`, in order.
TEXT_FEATURE_COLUMNS: list[str] = [
    *[f"{speaker}_{c}" for speaker in TRACKS for c in LINGUISTIC_COLUMNS],
    *[f"inter_{c}" for c in INTERACTION_COLUMNS],
]


class TextFeaturizer:
    """Holds the linguistic and interaction extractors so spaCy loads once.

    Each call runs spaCy once over all utterances and feeds both extractors.

    Args:
        config: Text configuration; defaults to ``TextConfig()``.
        batch_size: Texts per ``nlp.pipe`` batch (speed only).

    Raises:
        ConfigError: When a note/repeat pattern in ``config`` is invalid.

    Example:
        >>> featurizer = TextFeaturizer()
        >>> table = featurizer.transform(utts, session_ids)  # doctest: +SKIP

    """

    def __init__(self, config: TextConfig | None = None, *, batch_size: int = 256):
        self.config = config if config is not None else TextConfig()
        self.linguistic = LinguisticExtractor(self.config, batch_size=batch_size)
        self.interaction = InteractionExtractor(self.config, linguistic=self.linguistic)

    def transform(
        self, utts: pd.DataFrame, session_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Compute the text features of every session.

        Args:
            utts: Utterances with ``session_id, speaker, start_s, end_s, text``
                (``confidence`` etc. ignored); not changed.
            session_ids: Sessions to report, in this order; sessions without
                utterances get zero counts and ``NaN`` ratios; utterances of other
                sessions are ignored.  ``None``: the sessions in ``utts``, sorted.

        Returns:
            DataFrame indexed by ``session_id`` with :data:`TEXT_FEATURE_COLUMNS`.

        Raises:
            TranscriptError: When required columns are missing.
            ModelLoadError: When the spaCy pipeline cannot be loaded.

        """
        annotations = self.linguistic.annotate(utts)
        ling = self.linguistic.aggregate(annotations, session_ids)
        inter = self.interaction.aggregate(annotations, session_ids)
        speakers = ling.index.get_level_values("speaker")
        parts = [
            ling[speakers == speaker]
            .droplevel("speaker")
            .reindex(inter.index)
            .add_prefix(f"{speaker}_")
            for speaker in TRACKS
        ]
        parts.append(inter.add_prefix("inter_"))
        out = pd.concat(parts, axis=1)
        return out[TEXT_FEATURE_COLUMNS]


def featurizer(config: TextConfig | None = None) -> TextFeaturizer:
    """Return the :class:`TextFeaturizer` of ``config``, built once per configuration.

    Args:
        config: Text configuration; defaults to ``TextConfig()``.

    Returns:
        A featurizer shared by every call with an equal configuration (the spaCy
        pipeline loads on its first use).
    """
    config = config if config is not None else TextConfig()
    return _featurizer_for(config.model_dump_json())


@functools.lru_cache(maxsize=4)
def _featurizer_for(config_json: str) -> TextFeaturizer:
    return TextFeaturizer(TextConfig.model_validate_json(config_json))


def text_features(
    utts: pd.DataFrame,
    config: TextConfig | None = None,
    session_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return one row of text features per session.

    A :class:`TextFeaturizer` is cached per configuration, so repeated calls
    load the spaCy pipeline only once.

    Args:
        utts: Utterances with ``session_id, speaker, start_s, end_s, text``;
            not changed.
        config: Text configuration; defaults to ``TextConfig()``.
        session_ids: Sessions to report (see :meth:`TextFeaturizer.transform`).

    Returns:
        DataFrame indexed by ``session_id`` with :data:`TEXT_FEATURE_COLUMNS`.

    Raises:
        TranscriptError: When required columns are missing.
        ModelLoadError: When the spaCy pipeline cannot be loaded.
        ConfigError: When a note/repeat pattern is invalid.

    Example:
        >>> from atrisk.ingest.utterances import load_utterances
        >>> utts, problems = load_utterances("utterances.csv")  # doctest: +SKIP
        >>> table = text_features(utts)  # doctest: +SKIP
        >>> table.loc["s1", "inter_qa_rounds"]  # doctest: +SKIP

    """
    return featurizer(config).transform(utts, session_ids)
