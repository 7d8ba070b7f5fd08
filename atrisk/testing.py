"""Small factories for tests, examples and benchmarks.

Nothing here is used by the pipeline itself.  Heavy libraries (torch,
transformers) are imported inside the functions, so importing this module is
cheap.

Example:
    >>> from pathlib import Path
    >>> folder = make_tiny_wav2vec2(Path("/tmp/tiny-w2v2"))  # doctest: +SKIP
    >>> wav = espeak_wav("hello there", Path("/tmp/hello.wav"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

#: Characters of the default tiny-model vocabulary (the space is the word delimiter).
DEFAULT_VOCAB = "abcdefghijklmnopqrstuvwxyz' "


def make_tiny_wav2vec2(
    out_dir: Path,
    vocab: str = DEFAULT_VOCAB,
    seed: int = 0,
    attention_mask: bool = False,
) -> Path:
    """Build a small, randomly initialised Wav2Vec2 CTC model and save it to a folder.

    The folder has the same files as a hub checkpoint (``config.json``, weights,
    ``preprocessor_config.json``, ``vocab.json``, tokenizer config), so
    :meth:`atrisk.asr.wav2vec2.Wav2Vec2Transcriber.from_pretrained` loads it like
    any other checkpoint.  Its output is random text: use it to test structure and
    timing, not words.  The feature encoder keeps the standard 7-layer convolution
    stack (320x downsampling: one frame per 20 ms at 16 kHz) with small channels.

    Args:
        out_dir: Folder to write (created when missing).
        vocab: Characters of the vocabulary; a space becomes the word delimiter ``|``.
            ``<pad>`` (the CTC blank, id 0), ``<s>``, ``</s>`` and ``<unk>`` are added.
        seed: Seed of the random initialisation (same seed, same weights).
        attention_mask: When ``True`` build a "layer-norm" model whose feature
            extractor returns an attention mask (like ``wav2vec2-large-lv60``);
            when ``False`` a "group-norm" model without one (like
            ``wav2vec2-base-960h``).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: When ``vocab`` is empty.
    """
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    chars = list(dict.fromkeys(vocab))  # unique, in order
    if not chars:
        raise ValueError("vocab must hold at least one character")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Same special tokens and order as facebook/wav2vec2-base-960h.
    tokens = ["<pad>", "<s>", "</s>", "<unk>", "|"]
    tokens += [c for c in chars if c not in {" ", "|"} and c not in tokens]
    vocab_dict = {tok: i for i, tok in enumerate(tokens)}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab_dict), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token="<unk>",
            pad_token="<pad>",
            bos_token="<s>",
            eos_token="</s>",
            word_delimiter_token="|",
            do_lower_case=False,
        )
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=attention_mask,
    )
    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    config = Wav2Vec2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer" if attention_mask else "group",
        do_stable_layer_norm=attention_mask,
        pad_token_id=vocab_dict["<pad>"],
        ctc_loss_reduction="mean",
        mask_time_prob=0.0,
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(config)
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def espeak_wav(
    text: str,
    path: Path,
    voice: str = "en-us",
    pitch: int = 50,
    speed: int = 150,
    sample_rate: int = 16000,
) -> Path:
    """Synthesise ``text`` with espeak-ng into a mono 16-bit WAV file.

    espeak-ng writes 22.05 kHz audio; sox (or ffmpeg when sox is missing)
    resamples it to ``sample_rate`` without dither, so the same arguments always
    give the same file.

    Args:
        text: What to say.
        path: WAV file to write (parent folders are created).
        voice: espeak-ng voice, e.g. ``"en-us"``, ``"en"``, ``"en-us+f3"``.
        pitch: espeak-ng pitch, 0-99.
        speed: Words per minute.
        sample_rate: Rate of the written file (Hz).

    Returns:
        ``path``.

    Raises:
        RuntimeError: When espeak-ng (or both sox and ffmpeg) is not installed or fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        _run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text])
        if shutil.which("sox") is not None:
            # -D: no dither, so that the same text always gives the same samples
            cmd = ["sox", "-D", str(raw), "-r", str(sample_rate), "-c", "1", "-b", "16", str(path)]
        elif shutil.which("ffmpeg") is not None:
            cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw),
                   "-ar", str(sample_rate), "-ac", "1", "-sample_fmt", "s16", str(path)]
        else:
            raise RuntimeError(
                "neither sox nor ffmpeg is installed; cannot resample espeak-ng output"
            )
        _run(cmd)
    return path


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def voiced_signal(f0: float, seconds: float = 4.0, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """Return a crude voiced signal: harmonics of ``f0`` in syllable-like bursts, a little noise.

    Enough for prosody (pitch, loudness, voicing) without a speech synthesiser.

    Args:
        f0: Fundamental frequency (Hz).
        seconds: Length.
        seed: Seed of the noise.
        sr: Sample rate (Hz).

    Returns:
        float32 samples.
    """
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    env = (np.sin(2 * np.pi * 2.5 * t) > 0).astype(float)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * env * 0.2
    return (x + rng.normal(0, 0.003, t.size)).astype("float32")


def small_recordings(root: Path, n: int = 3) -> Path:
    """Write a recordings folder of ``n`` short sessions with given transcripts.

    Sessions ``s0`` … have both tracks (2 s voiced signals) but the last, which has no
    student track (a ``partial`` session); ``utterances.csv`` holds two utterances per
    session, for the ``transcripts`` ASR backend.

    Args:
        root: Folder to create.
        n: Sessions (at most 9).

    Returns:
        ``root``.
    """
    import soundfile as sf

    root.mkdir(parents=True)
    rows = ["session_id,student_id,teacher_id,start_time"]
    utts = ["session_id,speaker,start_s,end_s,text"]
    for i in range(n):
        d = root / f"s{i}"
        d.mkdir()
        sf.write(d / "teacher.wav", voiced_signal(110 + 9 * i, seconds=2, seed=i), 16000)
        if i != n - 1:  # the last has no student track: partial, listed
            sf.write(d / "student.wav", voiced_signal(220 + 9 * i, seconds=2, seed=10 + i),
                     16000)
        rows.append(f"s{i},stu{i},tea1,2024-03-0{i + 1}T10:00:00Z")
        utts += [f"s{i},teacher,0.1,0.9,what is seven times {i + 2}?",
                 f"s{i},student,1.0,1.8,um it is {7 * (i + 2)}"]
    (root / "sessions.csv").write_text("\n".join(rows) + "\n")
    (root / "utterances.csv").write_text("\n".join(utts) + "\n")
    return root

