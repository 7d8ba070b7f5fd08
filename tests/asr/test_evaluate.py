"""ASR evaluation: the normalisation, WER/CER on hand-computed strings, manifests, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from atrisk.asr.evaluate import evaluate_manifest, read_manifest, score
from atrisk.asr.normalize import normalize_text
from atrisk.cli import app
from atrisk.errors import ConfigError
from atrisk.testing import espeak_wav

SR = 16000
runner = CliRunner()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HANDY CAN DRAW THE TURKEY", "handy can draw the turkey"),
        ("Well-known  [noise] FACTS, aren’t they?", "well known facts aren't they"),
        ("'cause the students' books", "cause the students books"),
        ("<unk> um (laughs) {breath} ok!", "um ok"),
        ("and/or snake_case", "and or snake case"),
        ("ＦＵＬＬ width", "full width"),  # NFKC
        ("2 plus 2", "2 plus 2"),  # digits stay digits
        ("   ", ""),
        (None, ""),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_score_hand_computed():
    refs = ["The cat sat on the mat.", "hello world"]
    hyps = ["the cat sat on mat", "HELLO there world"]
    s = score(refs, hyps)
    # words: 6 + 2 = 8; "the" deleted, "there" inserted -> 2 errors
    assert (s["words"], s["hits"], s["substitutions"], s["deletions"], s["insertions"]) == (
        8, 7, 0, 1, 1)
    assert s["wer"] == pytest.approx(2 / 8)
    # chars: 22 + 11 = 33; "the " deleted (4), "there " inserted (6)
    assert s["chars"] == 33 and s["char_errors"] == 10
    assert s["cer"] == pytest.approx(10 / 33)


def test_score_substitutions_and_empty_sides():
    s = score(["a b c", "x y", ""], ["a x c", "", ""])
    # row 1: one substitution; row 2: two deletions; row 3: nothing to say, nothing said
    assert (s["words"], s["substitutions"], s["deletions"], s["insertions"]) == (5, 1, 2, 0)
    assert s["wer"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        score(["a"], [])


def _manifest(tmp: Path, lines: list[str]) -> Path:
    path = tmp / "m.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_manifest_bad_rows(tmp_path: Path):
    sf.write(tmp_path / "a.wav", np.zeros(SR, dtype=np.float32), SR)
    m = _manifest(tmp_path, ["Text\tPATH\tspeaker", "hello\ta.wav\ts1", "x\tmissing.wav\ts1",
                             "y\t\ts2", "", "too\tmany\tfields\there"])
    rows, errors = read_manifest(m)
    assert [(r.row, r.path, r.text, r.speaker) for r in rows] == [
        (2, tmp_path / "a.wav", "hello", "s1")]
    assert [e.row for e in errors] == [3, 4, 6]
    assert "does not exist" in errors[0].reason and "empty path" in errors[1].reason
    with pytest.raises(ConfigError, match="missing column"):
        read_manifest(_manifest(tmp_path, ["path\tspeaker", "a.wav\ts"]))
    with pytest.raises(ConfigError, match="does not exist"):
        read_manifest(tmp_path / "nope.tsv")


@pytest.fixture(scope="module")
def sphinx_case(tmp_path_factory: pytest.TempPathFactory):
    """Espeak speech and silence; references made so that the WER is known exactly.

    The speech clip's hypothesis ``h`` (n words) comes from a separate pocketsphinx run
    (the decoder is deterministic); row 2 uses ``h`` as reference (0 errors), row 3 is 1 s
    of silence (no words: 2 deletions), row 4 is the speech clip with ``h`` + 2 extra words
    as reference (2 deletions), row 5 a missing file, row 6 a file that is not audio.
    """
    from atrisk.asr import load_transcriber

    tmp = tmp_path_factory.mktemp("eval")
    speech = espeak_wav("one two three four five", tmp / "speech.wav")
    sf.write(tmp / "silence.wav", np.zeros(SR, dtype=np.float32), SR)
    (tmp / "broken.wav").write_bytes(b"this is not audio")
    hyp = normalize_text(" ".join(
        s.text for s in load_transcriber("pocketsphinx").transcribe_file(speech)))
    assert hyp  # pocketsphinx hears words in espeak counting (tests/asr/test_sphinx.py)
    m = _manifest(tmp, ["path\tspeaker\ttext", f"speech.wav\ta\t{hyp}",
                        "silence.wav\tb\tHello there", f"{speech}\tb\t{hyp} zebra quartz",
                        "gone.wav\tb\tx", "broken.wav\tb\ty"])
    return m, len(hyp.split()), sf.info(speech).frames / SR


def test_evaluate_manifest_pocketsphinx_known_wer(sphinx_case):
    manifest, n, speech_s = sphinx_case
    res = evaluate_manifest(manifest, backend="pocketsphinx", progress=False)
    assert res["asr_model"] == "pocketsphinx:en-us"
    assert (res["rows"], res["evaluated"], res["failed"]) == (5, 3, 2)
    assert [f["row"] for f in res["failures"]] == [5, 6]
    assert "does not exist" in res["failures"][0]["reason"]
    assert "cannot decode" in res["failures"][1]["reason"]
    assert res["words"] == n + 2 + (n + 2)
    assert (res["deletions"], res["substitutions"], res["insertions"]) == (4, 0, 0)
    assert res["wer"] == pytest.approx(4 / (2 * n + 4))
    assert res["per_speaker"]["a"]["wer"] == 0.0 and res["per_speaker"]["a"]["n"] == 1
    assert res["per_speaker"]["b"]["wer"] == pytest.approx(4 / (n + 4))
    assert res["audio_s"] == pytest.approx(2 * speech_s + 1.0, abs=1e-3)
    assert res["rtf"] == pytest.approx(res["wall_s"] / res["audio_s"], rel=1e-3)
    assert 0 < res["cpu_rtf"] == pytest.approx(res["cpu_s"] / res["audio_s"], rel=1e-3)


def test_cli_evaluate_json_and_exit_code(sphinx_case):
    manifest, n, _ = sphinx_case
    r = runner.invoke(app, ["asr", "evaluate", "--manifest", str(manifest),
                            "--asr-backend", "pocketsphinx", "--json"])
    assert r.exit_code == 1, r.output  # two bad rows: listed, the rest evaluated
    res = json.loads(r.stdout)
    assert res["evaluated"] == 3 and res["wer"] == pytest.approx(4 / (2 * n + 4))
    r = runner.invoke(app, ["asr", "evaluate", "--manifest", str(manifest.parent / "x.tsv")])
    assert r.exit_code == 2
