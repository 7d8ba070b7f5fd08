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
LOG_FILE = "train_log.jsonl"
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class _Clip:
    row: int
    path: Path
    text: str  # normalised
    n_samples: int


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
                clips.append(_Clip(r.row, r.path, text, n))
    return clips, errors


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
    """Fine-tune a Wav2Vec2 CTC model (the recipe in the module docstring).

    Args:
        train: Training manifest (TSV ``path, text[, speaker]``).
        eval: Evaluation manifest (same layout); its WER/CER is logged after every epoch.
        base: Hub id, checkpoint folder, or folder with only ``config.json`` (random init).
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
            a different vocabulary on resume, or the device is unusable.
        ModelLoadError: When the base model cannot be loaded.
    """
    import torch

    require("transformers", feature="atrisk asr finetune")
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    from atrisk.device import resolve_device
    from atrisk.progress import progress_bar

    cfg = config or AsrFinetuneConfig()
    dev = str(resolve_device(device))
    hf_logging.disable_progress_bar()  # our own bar; no "Writing model shards" lines
    out = Path(out)
    train_rows, failures = read_manifest(train)
    eval_rows, eval_bad = read_manifest(eval)
    failures += eval_bad
    # a batch of clips shorter than one SpecAugment time mask cannot be masked (transformers
    # raises): training clips need mask_time_length + 1 frames (20 ms each), at least 25 ms
    min_train = max(400, 320 * (cfg.mask_time_length + 1)) if cfg.mask_time_prob > 0 else 400
    train_clips, bad = _check_clips(train_rows, str(train), cfg.max_audio_s, progress, "train",
                                    min_train)
    failures += bad
    eval_clips, bad = _check_clips(eval_rows, str(eval), None, progress, "eval")
    failures += bad
    if not train_clips:
        raise ConfigError(f"no usable training clip in {train} ({len(failures)} bad rows; "
                          f"first: {failures[0] if failures else 'the manifest is empty'})")
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

    batches = _batches(train_clips, cfg.batch_size)
    steps_per_epoch = math.ceil(len(batches) / cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    n_epochs = math.ceil(total / steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
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
