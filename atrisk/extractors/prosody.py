"""Prosodic features per track: openSMILE eGeMAPSv02 functionals (88 values).

:class:`ProsodyExtractor` wraps :class:`opensmile.Smile` (created once per
instance, lazily, and not pickled, so the extractor can be sent to process
pools) in the audinterface style: ``process_signal``, ``process_file``,
``process_files`` and ``process_sessions``.  Column names are openSMILE's own
(``loudness_sma3_amean``, ``F0semitoneFrom27.5Hz_sma3nz_amean``, ...).

Edge cases:

* A very short (< ~0.5 s) or all-zero signal is passed to openSMILE as is and
  whatever it returns is kept (openSMILE gives zeros for digital silence and
  NaN for a segment too short to frame).  If openSMILE raises, every feature is
  NaN and a warning is logged; a batch never stops for one track.
* Non-finite samples are set to 0 before extraction (as in
  :func:`atrisk.ingest.audio.load_audio`); multi-channel input ``(channels,
  samples)`` is averaged to mono.
* openSMILE is licensed for research and education only; :attr:`backend_name`
  is recorded with every feature table so the backend in use is always known.

Example:
    >>> ex = ProsodyExtractor()  # doctest: +SKIP
    >>> ex.process_file("recordings/s1/teacher.wav")["loudness_sma3_amean"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import opensmile
import pandas as pd

from atrisk.config import ProsodyConfig
from atrisk.errors import ConfigError
from atrisk.ingest.audio import DecodedSession, load_audio
from atrisk.records import TRACKS

log = logging.getLogger(__name__)

#: Index names of :meth:`ProsodyExtractor.process_sessions` (the ``prosody`` table key).
SESSION_INDEX = ["session_id", "track"]

#: Lowest sampling rate accepted (eGeMAPS frames need at least a few samples; openSMILE
#: crashes the interpreter on rates such as 1 Hz).
MIN_SAMPLING_RATE = 1000


class ProsodyExtractor:
    """openSMILE eGeMAPSv02 functionals for whole tracks.

    Args:
        config: Backend and feature set (defaults when ``None``); only
            ``backend="opensmile"`` is handled here.
        sample_rate: Rate (Hz) files are decoded to by :meth:`process_file`; use the
            same rate as :class:`~atrisk.config.AudioConfig` so that file and session
            features agree.

    Raises:
        ConfigError: When the configured backend or feature set is not openSMILE's.
    """

    def __init__(self, config: ProsodyConfig | None = None, sample_rate: int = 16000):
        self.config = config or ProsodyConfig()
        self.sample_rate = int(sample_rate)
        if self.config.backend != "opensmile":
            raise ConfigError(
                f"ProsodyExtractor handles prosody.backend='opensmile', got {self.config.backend!r}"
            )
        if not hasattr(opensmile.FeatureSet, self.config.feature_set):
            raise ConfigError(f"unknown openSMILE feature set {self.config.feature_set!r}")
        self._smile: opensmile.Smile | None = None

    # -- state -----------------------------------------------------------------------

    @property
    def smile(self) -> opensmile.Smile:
        """The :class:`opensmile.Smile` object (created on first use)."""
        if self._smile is None:
            self._smile = opensmile.Smile(
                feature_set=getattr(opensmile.FeatureSet, self.config.feature_set),
                feature_level=opensmile.FeatureLevel.Functionals,
            )
        return self._smile

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_smile"] = None  # recreated lazily in the worker
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"ProsodyExtractor(config={self.config!r}, sample_rate={self.sample_rate})"

    @property
    def feature_names(self) -> list[str]:
        """The feature (column) names, as openSMILE names them (88 for eGeMAPSv02)."""
        return list(self.smile.feature_names)

    @property
    def backend_name(self) -> str:
        """Backend id recorded with the table, e.g. ``opensmile-eGeMAPSv02-2.6.0``."""
        return f"opensmile-{self.config.feature_set}-{opensmile.__version__}"

    # -- processing ------------------------------------------------------------------

    def process_signal(self, signal: np.ndarray, sampling_rate: int) -> pd.Series:
        """Return the functionals of one signal.

        Args:
            signal: Samples, 1-D or ``(channels, samples)`` (channels are averaged).
            sampling_rate: Rate of ``signal`` (Hz).

        Returns:
            A float64 Series indexed by :attr:`feature_names`; all NaN when openSMILE
            fails on the signal.

        Raises:
            ValueError: When ``sampling_rate`` is below 1000 Hz (openSMILE aborts the whole
                process on such rates instead of raising) or ``signal`` has more than 2 axes.
        """
        if int(sampling_rate) < MIN_SAMPLING_RATE:
            raise ValueError(
                f"sampling_rate must be at least {MIN_SAMPLING_RATE} Hz, got {sampling_rate}"
            )
        x = np.asarray(signal, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=0, dtype=np.float32)
        elif x.ndim != 1:
            raise ValueError(f"signal must be 1-D or (channels, samples), got shape {x.shape}")
        if x.size and not np.isfinite(x).all():
            x = np.where(np.isfinite(x), x, np.float32(0))
        names = self.feature_names
        try:
            df = self.smile.process_signal(np.ascontiguousarray(x), int(sampling_rate))
            values = df.iloc[0].reindex(names).astype("float64")
        except Exception as exc:  # openSMILE errors must not stop a batch
            log.warning("openSMILE failed on a %d-sample signal (%s); features set to NaN",
                        x.size, exc)
            values = pd.Series(math.nan, index=names, dtype="float64")
        values.name = None
        values.index.name = None
        return values

    def process_file(self, path: Path | str) -> pd.DataFrame:
        """Return the functionals of one file (decoded to :attr:`sample_rate` mono).

        Args:
            path: Any file :func:`~atrisk.ingest.audio.load_audio` can decode.

        Returns:
            One row indexed by the file path (index name ``file``), one column per feature.

        Raises:
            AudioDecodeError: When the file cannot be decoded.
        """
        return self.process_files([path])

    def process_files(self, paths: Sequence[Path | str] | Iterable[Path | str]) -> pd.DataFrame:
        """Return the functionals of several files, one row each.

        Args:
            paths: Files to process.

        Returns:
            Rows indexed by file path (index name ``file``), one column per feature.

        Raises:
            AudioDecodeError: When a file cannot be decoded (use :meth:`process_sessions`
                with :func:`~atrisk.ingest.audio.decode_session` for batches that must not
                stop on a bad file).
        """
        files = [str(p) for p in paths]
        rows = [self.process_signal(load_audio(f, self.sample_rate), self.sample_rate)
                for f in files]
        return self._frame(rows, pd.Index(files, name="file", dtype="object"))

    def process_sessions(self, decoded: Iterable[DecodedSession]) -> pd.DataFrame:
        """Return the functionals of every decoded track of the sessions.

        Args:
            decoded: Sessions from :func:`~atrisk.ingest.audio.decode_session`.

        Returns:
            Rows indexed by ``(session_id, track)``; tracks whose signal is ``None``
            (missing or undecodable) are skipped.
        """
        keys: list[tuple[str, str]] = []
        rows: list[pd.Series] = []
        for item in decoded:
            rate = getattr(item, "sample_rate", self.sample_rate)
            for track in TRACKS:
                signal = item.signals.get(track)
                if signal is None:
                    continue
                keys.append((item.session.session_id, track))
                rows.append(self.process_signal(signal, rate))
        index = pd.MultiIndex.from_tuples(keys, names=SESSION_INDEX) if keys else \
            pd.MultiIndex.from_arrays([[], []], names=SESSION_INDEX)
        return self._frame(rows, index)

    def _frame(self, rows: list[pd.Series], index: pd.Index) -> pd.DataFrame:
        names = self.feature_names
        if rows:
            data = np.vstack([r.to_numpy(dtype="float64") for r in rows])
        else:
            data = np.empty((0, len(names)), dtype="float64")
        return pd.DataFrame(data, index=index, columns=names)
