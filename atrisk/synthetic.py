"""Synthetic cohort generator: platform logs and two-track class recordings.

``atrisk demo`` runs the whole pipeline on a cohort made here; tests and
benchmarks use it at any scale.  Everything is drawn from one generative model
and is deterministic for a seed (CSVs byte-for-byte; WAVs byte-for-byte for the
same espeak-ng version).  ``docs/demo.md`` describes the model in prose.

The generative model
--------------------
* **Students and teachers.**  Each student has a latent engagement
  ``e = z + shift(teacher)`` with ``z ~ N(0, 1)``.  A share of the teachers
  (``CohortParams.worse_teacher_share``) shift their students' engagement down
  (``worse_teacher_shift``) and remind less often to take notes, so a teacher's
  history carries signal.  Students enrol uniformly over the first
  ``enroll_window_days`` of the cohort.
* **Pre-class (orders).**  Low engagement → fewer courses bought, more sales
  conversations before the order, a bigger discount.
* **Dropout.**  A constant daily hazard ``hazard_base * exp(-hazard_slope * e)``
  from the order on gives a latent dropout time.  Observation ends at the first of
  dropout, completion (all ``n_courses`` classes held) or the cohort end
  (``ongoing``, checked at the cohort end).  One rule for every student, whatever
  the outcome: the logs hold the events strictly before the status time, and the
  pairs run from the day after the first class to the day of the status time.
* **Recording.**  Every student's first class is recorded (``record_first``), and each
  later class with probability ``record_share``, drawn per class from the student's
  own random stream before anything later is known: whether a class is recorded never
  depends on the outcome or on the classes after it (an optional cap keeps the first
  ``max_recorded_per_student`` recorded classes).  Pairs start the day after the
  first class, so every pair of a recorded student has in-class features and their
  presence carries no signal (with a share alone it would carry the number of classes
  so far).  ``record_students`` < 1 records only that share of the students, drawn per
  student at enrolment: presence then says which students those are, nothing more.
  Recording every student's *last* class instead would make the mere presence of
  in-class features say "this student's classes are over" (completers complete at
  their last class, so only dropouts have days after it); ``tests/test_canary.py``
  checks that in-class noise and the presence of in-class features predict nothing.
* **Decay before dropout.**  Over the last ``decay_days`` (7–10) days before the
  dropout time the current engagement falls linearly by up to ``decay_depth``.
  Current engagement ``e_t`` drives everything after the order: more
  reschedules (each moves the class 1–2 days), fewer and shorter follow-up
  reports, lower satisfaction scores, longer gaps between classes (base gap
  2–4 days).
* **In class.**  The same ``e_t`` drives the dialogue: the teacher greets, asks
  arithmetic and vocabulary questions from templates, sometimes reminds to take
  notes and asks for a summary.  An engaged student answers quickly with a full
  sentence; a disengaged one answers late, briefly or wrongly ("um I don't
  know", "fifty"), or not at all, asks more often to repeat, and speaks slower.
  Each turn is voiced with espeak-ng on its own speaker's track; the other track
  holds only very low noise (−60 dBFS), so turn-taking and latencies are real.

Outputs (``out/``): ``logs/{students,orders,events,outcomes}.csv`` (schema in
``docs/data.md``), with audio ``recordings/sessions.csv`` and
``recordings/<session_id>/{teacher,student}.wav`` (16 kHz mono 16-bit),
``utterances.csv`` (the voiced turns with their true times, in the utterances
table's columns) and ``ground_truth.json`` (latent engagement and dropout times,
for tests and debugging only; the product never reads it).

Example:
    >>> from pathlib import Path
    >>> summary = generate_cohort(Path("demo"), n_students=30, seed=0)  # doctest: +SKIP
    >>> summary.n_sessions  # doctest: +SKIP
    54

"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

from atrisk.errors import AtriskError, ConfigError
from atrisk.records import UTTERANCE_COLUMNS

__all__ = [
    "CohortParams",
    "CohortSummary",
    "SpeechSynth",
    "Turn",
    "Voice",
    "class_session_id",
    "generate_cohort",
    "plan_dialogue",
    "recorded_sessions",
    "render_session",
    "student_speed",
]

#: Columns of the log files, in the order written.
STUDENT_COLUMNS = ["student_id", "enrolled_at", "grade"]
ORDER_COLUMNS = [
    "order_id", "student_id", "ordered_at", "n_courses", "discount_ratio",
    "n_sales_conversations",
]
EVENT_COLUMNS = ["event_id", "student_id", "time", "kind", "teacher_id", "session_id", "words",
                 "value"]
OUTCOME_COLUMNS = ["student_id", "status", "status_time"]
SESSION_MANIFEST_COLUMNS = ["session_id", "student_id", "teacher_id", "start_time"]

DEFAULT_START = datetime(2024, 3, 1, tzinfo=UTC)
_MARKER = "ground_truth.json"


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class CohortParams:
    """Knobs of the generative model (the defaults give the demo cohort).

    Attributes:
        enroll_window_days: Students enrol uniformly over this many first days.
        cohort_days: Length of the cohort; outcomes of students still active then
            are ``ongoing`` at this time.
        hazard_base: Daily dropout hazard of a student with engagement 0.
        hazard_slope: Hazard is ``hazard_base * exp(-hazard_slope * e)``.
        decay_days: Range (days) of the pre-dropout decay window, drawn per student.
        decay_depth: Drop of current engagement at the dropout time.
        class_noise: Standard deviation of per-class engagement noise.
        gap_days: Range (days) of the base gap between two classes.
        first_class_days: Smallest and largest whole-day delay of the first class
            after the order.
        dropout_delay_days: The dropout time is drawn after ``ordered`` plus this many
            days (0 for the demo; the paper-scale preset uses it so that almost every
            dropout has had a class and so has ``<student, day>`` pairs).
        courses_mean: Mean number of courses (classes) bought at engagement 0.
        courses_range: Smallest and largest number of courses bought.
        reschedule_rate: Mean reschedules per class at engagement 0.
        worse_teacher_share: Share of teachers whose students are less engaged.
        worse_teacher_shift: Engagement shift of those teachers' students.
        max_track_s: No turn of a class dialogue ends after this (seconds).
        max_turns: At most this many turns per class dialogue.
        noise_dbfs: RMS level of the background noise on both tracks.
        sample_rate: Sample rate of the written tracks (Hz).
        record_first: Record every student's first class (then every pair, which
            starts the day after the first class, has in-class features, and their
            presence says nothing).
        record_share: Probability that each later class is recorded; drawn per class
            independently of the outcome and of later classes.  1.0 records every
            class.
        record_students: Share of the students whose classes are recorded at all,
            drawn per student at enrolment (before anything else about them is known);
            the others' classes exist in the logs only.

    """

    enroll_window_days: float = 21.0
    cohort_days: float = 42.0
    hazard_base: float = 0.006
    hazard_slope: float = 0.9
    decay_days: tuple[float, float] = (7.0, 10.0)
    decay_depth: float = 2.0
    class_noise: float = 0.25
    gap_days: tuple[int, int] = (2, 4)
    first_class_days: tuple[int, int] = (1, 3)
    dropout_delay_days: float = 0.0
    courses_mean: float = 6.0
    courses_range: tuple[int, int] = (3, 10)
    reschedule_rate: float = 0.15
    worse_teacher_share: float = 0.34
    worse_teacher_shift: float = -0.6
    max_track_s: float = 28.0
    max_turns: int = 10
    noise_dbfs: float = -60.0
    sample_rate: int = 16000
    record_first: bool = True
    record_share: float = 0.1
    record_students: float = 1.0


@dataclass(frozen=True)
class CohortSummary:
    """What :func:`generate_cohort` wrote.

    Attributes:
        n_students: Students in the cohort.
        n_dropouts: Students whose outcome is ``dropout``.
        dropout_rate: ``n_dropouts / n_students``.
        n_classes: Class events in ``events.csv``.
        n_sessions: Recorded classes (rows of ``recordings/sessions.csv``; 0 without audio).
        mean_span_days: Mean of ``status_time - enrolled_at`` in days.
        paths: Written locations: ``logs``, ``ground_truth`` and, with audio,
            ``recordings`` and ``utterances``.
        audio_seconds: Wall time spent voicing and writing tracks (0 without audio).

    """

    n_students: int
    n_dropouts: int
    dropout_rate: float
    n_classes: int
    n_sessions: int
    mean_span_days: float
    paths: dict[str, Path]
    audio_seconds: float = 0.0


# --------------------------------------------------------------------------- dialogue


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice setting.

    Attributes:
        name: espeak-ng voice (``-v``), e.g. ``"en-us+m3"``.
        pitch: Pitch 0–99 (``-p``).
        speed: Words per minute (``-s``).

    """

    name: str
    pitch: int
    speed: int


@dataclass(frozen=True)
class Turn:
    """One planned utterance of a class dialogue.

    Attributes:
        speaker: ``"teacher"`` or ``"student"``.
        text: What is said.
        voice: How it is voiced.
        gap_s: Silence before the turn starts, after the end of the previous turn.

    """

    speaker: str
    text: str
    voice: Voice
    gap_s: float

    @property
    def key(self) -> tuple[str, int, int, str]:
        """Cache key of the synthesised audio: (voice, pitch, speed, text)."""
        return (self.voice.name, self.voice.pitch, self.voice.speed, self.text)


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _num_words(n: int) -> str:
    """Spell ``0 <= n < 1000`` in words, without hyphens ("fifty six")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + (f" {_num_words(rest)}" if rest else "")


_VOCAB = (
    ("noun", "a", "A noun is a person, place or thing.", "nouns"),
    ("verb", "a", "A verb is an action word.", "verbs"),
    ("adjective", "an", "An adjective is a word that describes a noun.", "adjectives"),
    ("adverb", "an", "An adverb tells us how something is done.", "adverbs"),
    ("pronoun", "a", "A pronoun takes the place of a noun.", "pronouns"),
    ("synonym", "a", "A synonym is a word with the same meaning.", "synonyms"),
    ("antonym", "an", "An antonym is a word with the opposite meaning.", "antonyms"),
    ("sentence", "a", "A sentence is a group of words with a complete thought.", "sentences"),
)
_VOCAB_Q = ("Can you tell me what {art} {w} is?", "What is {art} {w}?",
            "Do you know what {art} {w} is?")
_VAGUE = ("a word", "um a thing", "something", "a kind of word", "um I think a name")
_GREETINGS = ("Hello! Let's start today's lesson.", "Hi there, let's get started.",
              "Good afternoon. Today we will practise maths and words.")
_PRAISE = ("Great job.", "Very good.", "That's right, well done.", "Excellent.")
_CORRECT_SOFT = ("Not quite. Let's try again later.", "Hmm, close.", "Okay, good try.")
_DONT_KNOW = ("um I don't know", "I don't know", "uh not sure", "um no idea")
_REASSURE = ("That's okay.", "No problem, let's keep going.")
_NO_ANSWER = ("Are you still there? Let's move on.", "Hello? Okay, next one.")
_REPEAT = ("Can you say that again?", "Could you repeat that, please?",
           "Sorry, what did you say?")
_NOTES = ("Please write this down in your notes.", "Remember to take notes.",
          "Write that down in your notebook, please.")
_SUMMARY_Q = ("Can you summarise what we learned today?", "Now, please summarise today's lesson.")
_SUMMARY_BAD = ("um I don't remember", "numbers I think", "uh not much")


def _question(rng: np.random.Generator) -> tuple[str, str, str, str]:
    """Draw one question: (question, full answer, short answer, topic)."""
    kind = int(rng.integers(4))
    if kind == 3:
        w, art, definition, topic = _VOCAB[int(rng.integers(len(_VOCAB)))]
        q = _VOCAB_Q[int(rng.integers(len(_VOCAB_Q)))].format(art=art, w=w)
        return q, definition, _VAGUE[int(rng.integers(len(_VAGUE)))], topic
    if kind == 0:
        a, b = (int(v) for v in rng.integers(2, 10, size=2))
        ans, op, topic = a * b, "times", "multiplication"
    elif kind == 1:
        a, b = (int(v) for v in rng.integers(3, 21, size=2))
        ans, op, topic = a + b, "plus", "addition"
    else:
        a = int(rng.integers(10, 31))
        b = int(rng.integers(2, a))
        ans, op, topic = a - b, "minus", "subtraction"
    q = f"What is {_num_words(a)} {op} {_num_words(b)}?"
    if rng.random() < 0.5:
        full = f"It is {_num_words(ans)}."
    else:
        full = f"{_num_words(a).capitalize()} {op} {_num_words(b)} is {_num_words(ans)}."
    r = rng.random()
    if r < 0.4:
        short = _num_words(ans)
    elif r < 0.7 and ans >= 20:
        short = _num_words(ans - ans % 10)  # "fifty" for fifty six
    else:
        short = "um " + _num_words(max(0, ans + int(rng.choice([-3, -2, -1, 1, 2, 10]))))
    return q, full, short, topic


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def student_speed(engagement: float) -> int:
    """Speaking rate (words/minute) of a student at current engagement ``engagement``.

    Quantised to steps of 10 (120–160) so that synthesised utterances cache well.

    Args:
        engagement: Current engagement (standard-normal scale).

    Returns:
        espeak-ng speed in words per minute.

    """
    e = min(1.0, max(-2.0, engagement))
    return int(round((150 + 15 * e) / 10.0) * 10)


def plan_dialogue(
    engagement: float,
    rng: np.random.Generator,
    teacher_voice: Voice,
    student_voice: Voice,
    note_rate: float = 0.3,
    max_turns: int = 10,
) -> list[Turn]:
    """Plan the turns of one class from the student's current engagement.

    Args:
        engagement: Current engagement ``e_t`` of the student (standard-normal scale).
        rng: Random generator (the only source of randomness).
        teacher_voice: Voice of the teacher.
        student_voice: Voice of the student (its speed is the one used).
        note_rate: Probability that the teacher reminds to take notes in this class.
        max_turns: Keep at most this many turns.

    Returns:
        The turns in order; the first one's ``gap_s`` is the lead-in silence.

    """
    e = float(engagement)
    p_full = _sigmoid(0.6 + 1.5 * e)
    p_repeat = 0.08 + 0.25 * (1.0 - _sigmoid(1.5 * e))
    turns: list[Turn] = []

    def teacher(text: str, gap: float) -> None:
        turns.append(Turn("teacher", text, teacher_voice, round(gap, 3)))

    def student(text: str, gap: float) -> None:
        turns.append(Turn("student", text, student_voice, round(gap, 3)))

    def reply_gap() -> float:  # teacher reacts to the student
        return 0.4 + min(0.8, float(rng.exponential(0.3)))

    def fast_latency() -> float:
        return 0.3 + min(1.2, float(rng.exponential(0.35)))

    def slow_latency() -> float:
        return 1.3 + min(2.7, float(rng.exponential(1.0)))

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    teacher(pick(_GREETINGS), 0.3 + 0.4 * float(rng.random()))
    topics: list[str] = []
    n_rounds = int(rng.integers(2, 4))
    note_round = int(rng.integers(n_rounds)) if rng.random() < note_rate else -1
    for r in range(n_rounds):
        q, full, short, topic = _question(rng)
        topics.append(topic)
        teacher(q, 0.5 + 0.4 * float(rng.random()))
        if rng.random() < p_repeat:
            student(pick(_REPEAT), slow_latency() if rng.random() < 0.5 else fast_latency())
            teacher(q, reply_gap())
        u = rng.random()
        if u < p_full:
            student(full, fast_latency())
            if rng.random() < 0.6:
                teacher(pick(_PRAISE), reply_gap())
        else:
            v = (u - p_full) / (1.0 - p_full)
            if v < 0.45:
                student(short, slow_latency())
                teacher(pick(_CORRECT_SOFT), reply_gap())
            elif v < 0.75:
                student(pick(_DONT_KNOW), slow_latency())
                teacher(pick(_REASSURE), reply_gap())
            else:
                teacher(pick(_NO_ANSWER), 3.5 + 1.5 * float(rng.random()))
        if r == note_round:
            teacher(pick(_NOTES), reply_gap())
    if rng.random() < 0.5:
        teacher(pick(_SUMMARY_Q), reply_gap())
        if rng.random() < p_full:
            names = list(dict.fromkeys(topics))[:2]
            student(f"We learned about {' and '.join(names)}.", fast_latency())
        elif rng.random() < 0.7:
            student(pick(_SUMMARY_BAD), slow_latency())
    return turns[:max_turns]


# --------------------------------------------------------------------------- speech


class SpeechSynth:
    """espeak-ng synthesiser with a cache by (voice, pitch, speed, text).

    Utterances are synthesised in a small thread pool (each call is its own
    espeak-ng process), resampled to ``sample_rate`` and trimmed of leading and
    trailing silence.

    Args:
        sample_rate: Rate of the returned audio (Hz).
        workers: Threads running espeak-ng; default ``min(4, usable CPUs)``
            (:func:`atrisk.extract.resources.usable_cpus`: affinity and cgroup quota).
        executable: espeak-ng program name or path.

    Raises:
        AtriskError: When espeak-ng is not installed.

    """

    def __init__(self, sample_rate: int = 16000, workers: int | None = None,
                 executable: str = "espeak-ng"):
        found = shutil.which(executable)
        if found is None:
            raise AtriskError(
                f"{executable} not found: install it (apt-get install espeak-ng) or generate "
                "the cohort without audio (audio=False)"
            )
        self.executable = found
        self.sample_rate = int(sample_rate)
        from atrisk.extract.resources import usable_cpus

        self.workers = workers or min(4, usable_cpus())
        self._cache: dict[tuple[str, int, int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def synthesize(self, key: tuple[str, int, int, str], workdir: Path) -> np.ndarray:
        """Voice one utterance (no cache).

        Args:
            key: (voice, pitch, speed, text).
            workdir: Folder for the temporary WAV file.

        Returns:
            float32 mono audio at ``sample_rate``, silence trimmed.

        Raises:
            AtriskError: When espeak-ng fails.

        """
        voice, pitch, speed, text = key
        fd, tmp = tempfile.mkstemp(suffix=".wav", dir=workdir)
        os.close(fd)
        try:
            proc = subprocess.run(
                [self.executable, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", tmp,
                 text],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise AtriskError(f"espeak-ng failed on {text!r} ({voice}): {proc.stderr.strip()}")
            audio, sr = sf.read(tmp, dtype="float64", always_2d=False)
        finally:
            os.unlink(tmp)
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        if sr != self.sample_rate:
            g = math.gcd(int(sr), self.sample_rate)
            audio = resample_poly(audio, self.sample_rate // g, int(sr) // g)
        loud = np.flatnonzero(np.abs(audio) > 1e-3)
        if loud.size:
            pad = int(0.01 * self.sample_rate)
            audio = audio[max(0, loud[0] - pad): loud[-1] + pad]
        return np.clip(audio, -1.0, 1.0).astype(np.float32)

    def prepare(self, keys: Iterable[tuple[str, int, int, str]],
                on_done: Callable[[], None] | None = None) -> int:
        """Synthesise every key not yet cached, in the thread pool.

        Args:
            keys: Cache keys (duplicates are voiced once).
            on_done: Called after each synthesised utterance.

        Returns:
            Number of utterances synthesised by this call.

        """
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if not todo:
            return 0
        with tempfile.TemporaryDirectory(prefix="atrisk-tts-") as tmp:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                futures = [(k, pool.submit(self.synthesize, k, Path(tmp))) for k in todo]
                for k, fut in futures:
                    self._cache[k] = fut.result()
                    if on_done is not None:
                        on_done()
        return len(todo)

    def get(self, key: tuple[str, int, int, str]) -> np.ndarray:
        """Return the audio of ``key``, voicing it first when it is not cached."""
        if key not in self._cache:
            self.prepare([key])
        return self._cache[key]


def render_session(
    turns: Sequence[Turn],
    synth: SpeechSynth,
    folder: Path,
    rng: np.random.Generator,
    max_track_s: float = 28.0,
    noise_dbfs: float = -60.0,
    session_id: str = "",
) -> list[dict[str, object]]:
    """Lay the turns out on two tracks and write ``teacher.wav`` and ``student.wav``.

    Each turn starts ``gap_s`` after the end of the previous turn, on its own
    speaker's track; the other track holds only background noise there.  Turns
    that would end after ``max_track_s`` are dropped (with all later turns, and
    with the teacher question just before them, so a class never ends on an
    unanswered question that was only cut off).

    Args:
        turns: Planned turns (see :func:`plan_dialogue`).
        synth: Synthesiser (its cache is used and filled).
        folder: Session folder; created when missing.
        rng: Random generator of the background noise.
        max_track_s: Latest end of a turn (seconds).
        noise_dbfs: RMS level of the background noise (dBFS).
        session_id: Id written into the returned utterance rows.

    Returns:
        One dict per voiced turn with the utterances table's columns
        (``session_id, speaker, start_s, end_s, text, confidence, asr_model``).

    """
    sr = synth.sample_rate
    placed: list[tuple[str, int, np.ndarray, Turn]] = []
    cursor = 0.0
    for turn in turns:
        audio = synth.get(turn.key)
        start = int(round((cursor + turn.gap_s) * sr))
        end = start + audio.size
        if end / sr > max_track_s:
            # do not end on a teacher question whose answer was cut off
            if placed and placed[-1][0] == "teacher" and placed[-1][3].text.endswith("?"):
                placed.pop()
                cursor = (placed[-1][1] + placed[-1][2].size) / sr if placed else 0.0
            break
        placed.append((turn.speaker, start, audio, turn))
        cursor = end / sr
    n = int(round((cursor + 0.5) * sr))
    level = 10.0 ** (noise_dbfs / 20.0)
    tracks = {s: rng.normal(0.0, level, n) for s in ("teacher", "student")}
    rows: list[dict[str, object]] = []
    for speaker, start, audio, turn in placed:
        tracks[speaker][start: start + audio.size] += audio
        rows.append({
            "session_id": session_id, "speaker": speaker, "start_s": round(start / sr, 3),
            "end_s": round((start + audio.size) / sr, 3), "text": turn.text,
            "confidence": 1.0, "asr_model": "ground_truth",
        })
    folder.mkdir(parents=True, exist_ok=True)
    for speaker, signal in tracks.items():
        pcm = np.round(np.clip(signal, -1.0, 1.0) * 32767.0).astype(np.int16)
        sf.write(folder / f"{speaker}.wav", pcm, sr, subtype="PCM_16", format="WAV")
    return rows


# --------------------------------------------------------------------------- simulation


@dataclass
class _Event:
    t: float  # days since cohort start
    kind: str
    teacher_id: str = ""
    session_id: str = ""
    words: int | None = None
    value: float | None = None


@dataclass
class _Class:
    t: float
    engagement: float
    session_id: str = ""


@dataclass
class _Student:
    idx: int
    student_id: str
    teacher: int
    engagement: float
    grade: int
    enrolled: float
    ordered: float
    n_courses: int
    discount: float
    n_sales: int
    dropout_at: float
    decay_days: float
    pitch: int
    classes: list[_Class] = field(default_factory=list)
    events: list[_Event] = field(default_factory=list)
    status: str = "ongoing"
    status_time: float = 0.0


@dataclass(frozen=True)
class _Teacher:
    teacher_id: str
    shift: float
    note_rate: float
    voice: Voice


def _teachers(n: int, rng: np.random.Generator, p: CohortParams) -> list[_Teacher]:
    n_worse = int(round(p.worse_teacher_share * n))
    worse = set(rng.permutation(n)[:n_worse].tolist())
    out = []
    for i in range(n):
        bad = i in worse
        voice = Voice("en-us+m3", int(rng.choice([30, 35, 40])), int(rng.choice([160, 170, 180])))
        out.append(_Teacher(f"T{i + 1:03d}", p.worse_teacher_shift if bad else 0.0,
                            0.15 if bad else 0.4, voice))
    return out


def _current_engagement(s: _Student, t: float, p: CohortParams) -> float:
    """Engagement at time ``t``: the latent value minus the pre-dropout decay."""
    to_drop = s.dropout_at - t
    frac = min(1.0, max(0.0, 1.0 - to_drop / s.decay_days))
    return s.engagement - p.decay_depth * frac


def _at_hour(day: float, rng: np.random.Generator, lo: int = 15, hi: int = 20) -> float:
    """Put a time on a whole half hour between ``lo`` and ``hi`` o'clock of its day."""
    return math.floor(day) + (lo + 0.5 * int(rng.integers(0, 2 * (hi - lo) + 1))) / 24.0


def _simulate_student(idx: int, teachers: list[_Teacher], seed: int,
                      p: CohortParams) -> _Student:
    rng = np.random.default_rng([seed, 1, idx])
    ti = int(rng.integers(len(teachers)))
    teacher = teachers[ti]
    e = float(rng.normal()) + teacher.shift
    enrolled = float(rng.uniform(0.0, p.enroll_window_days))
    ordered = enrolled + float(rng.uniform(0.5, 6.0)) / 24.0
    lo, hi = p.courses_range
    n_courses = int(np.clip(round(p.courses_mean + 1.2 * e + rng.normal(0, 1.2)), lo, hi))
    discount = float(np.clip(0.10 - 0.06 * e + rng.normal(0, 0.04), 0.0, 0.6))
    n_sales = int(rng.poisson(math.exp(0.6 - 0.5 * e)))
    hazard = p.hazard_base * math.exp(-p.hazard_slope * e)
    dropout_at = ordered + p.dropout_delay_days + float(rng.exponential(1.0 / hazard))
    s = _Student(
        idx=idx, student_id=f"S{idx + 1:04d}", teacher=ti, engagement=e,
        grade=int(rng.integers(1, 13)), enrolled=enrolled, ordered=ordered,
        n_courses=n_courses, discount=round(discount, 3), n_sales=n_sales,
        dropout_at=dropout_at, decay_days=float(rng.uniform(*p.decay_days)),
        pitch=int(rng.choice([60, 70, 80])),
    )
    end = p.cohort_days
    prev = ordered
    t = _at_hour(ordered + float(rng.integers(p.first_class_days[0],
                                              p.first_class_days[1] + 1)), rng)
    while len(s.classes) < n_courses:
        e_t = _current_engagement(s, t, p) + float(rng.normal(0, p.class_noise))
        for _ in range(int(rng.poisson(p.reschedule_rate * math.exp(-1.0 * e_t)))):
            r = max(prev + 1.0 / 24.0, t - float(rng.uniform(2.0, 20.0)) / 24.0)
            s.events.append(_Event(r, "reschedule"))
            prev = r
            t = _at_hour(t + float(rng.integers(1, 3)), rng)
        if t >= s.dropout_at or t >= end:
            break
        s.classes.append(_Class(t, e_t))
        s.events.append(_Event(t, "class", teacher.teacher_id))
        if rng.random() < _sigmoid(1.8 + 1.2 * e_t):
            words = max(3, int(round(rng.normal(45 + 15 * e_t, 8))))
            s.events.append(_Event(t + float(rng.uniform(1.5, 20.0)) / 24.0, "follow_up",
                                   teacher.teacher_id, words=words))
        if rng.random() < 0.5:
            score = float(np.clip(round(3.6 + 0.7 * e_t + rng.normal(0, 0.5)), 1, 5))
            s.events.append(_Event(t + float(rng.uniform(1.1, 6.0)) / 24.0, "satisfaction",
                                   value=score))
        prev = t + 1.0 / 24.0
        gap = float(rng.integers(p.gap_days[0], p.gap_days[1] + 1))
        gap = round(gap * (1.0 + 0.3 * max(0.0, -e_t)))
        t = _at_hour(t + max(1, gap), rng)
    completed_at = s.classes[-1].t + 1.0 / 24.0 if s.classes else math.inf
    if len(s.classes) == n_courses and completed_at < min(s.dropout_at, end):
        s.status, s.status_time = "completion", completed_at
    elif s.dropout_at <= end:
        s.status, s.status_time = "dropout", s.dropout_at
    else:
        s.status, s.status_time = "ongoing", end
    # one rule for every outcome: the logs hold what happened before the status time
    s.events = [ev for ev in s.events if ev.t < s.status_time]
    s.events.sort(key=lambda ev: ev.t)
    return s


# --------------------------------------------------------------------------- writing


def _iso(start: datetime, days: float) -> str:
    return (start + timedelta(seconds=round(days * 86400.0))).isoformat(timespec="seconds")


def _write_csv(path: Path, columns: list[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if v is None else v for v in row])


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / _MARKER).exists():
        raise ConfigError(
            f"{out} is not empty and was not made by the cohort generator (no {_MARKER}); "
            "choose an empty or new folder"
        )
    for sub in ("logs", "recordings"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    for name in (_MARKER, "utterances.csv"):
        (out / name).unlink(missing_ok=True)
    (out / "logs").mkdir(parents=True)


def _recorded_indices(n_classes: int, share: float, cap: int | None,
                      rng: np.random.Generator, first: bool = True) -> list[int]:
    """Which classes of a student are recorded, decided class by class without the future.

    The first class is recorded when ``first``; class ``k`` (any class when not
    ``first``) when the ``k``-th uniform draw of the student's own stream is below
    ``share`` (the draws do not depend on how many classes the student has); with a
    cap, only while fewer than ``cap`` earlier classes were recorded.
    """
    if n_classes == 0 or (cap is not None and cap <= 0):
        return []
    u = rng.random(n_classes)
    chosen = [k for k in range(n_classes) if (first and k == 0) or u[k] < share]
    return chosen if cap is None else chosen[:cap]


def class_session_id(student_id: str, class_index: int) -> str:
    """Return the session id of a student's ``class_index``-th class (0-based).

    Example:
        >>> class_session_id("S0007", 2)
        'S0007-C03'
    """
    return f"{student_id}-C{class_index + 1:02d}"


def _cohort_classes(cohort_dir: Path | str) -> tuple[dict, pd.DataFrame]:
    """Read a generated cohort's ground truth and its class events, numbered per student.

    Returns ``(truth, classes)``: the ``ground_truth.json`` dict, and the ``class`` events
    in student and time order with ``_t`` (UTC time) and ``_k`` (the student's class
    number, from 0).  Raises ``ConfigError`` when the folder is not a generated cohort.
    """
    cohort_dir = Path(cohort_dir)
    truth_path, events_path = cohort_dir / _MARKER, cohort_dir / "logs" / "events.csv"
    if not truth_path.is_file() or not events_path.is_file():
        raise ConfigError(f"{cohort_dir} is not a generated cohort (needs {_MARKER} and "
                          "logs/events.csv)")
    truth = json.loads(truth_path.read_text(encoding="utf-8"))
    ev = pd.read_csv(events_path, dtype=str, keep_default_na=False)
    cls = ev[ev["kind"] == "class"].copy()
    cls["_t"] = pd.to_datetime(cls["time"], utc=True)
    cls = cls.sort_values(["student_id", "_t"], kind="stable")
    cls["_k"] = cls.groupby("student_id").cumcount()
    return truth, cls


def recorded_sessions(cohort_dir: Path | str) -> pd.DataFrame:
    """Return the recorded classes of a generated cohort as a sessions manifest.

    The same rows as ``recordings/sessions.csv`` of a cohort made with audio; a cohort
    made without audio has no recordings, but its classes were chosen for recording by
    the same rule, and this gives them (for tests that stand noise in for audio).

    Args:
        cohort_dir: A folder written by :func:`generate_cohort`.

    Returns:
        DataFrame ``session_id``, ``student_id``, ``teacher_id``, ``start_time`` (UTC),
        in student and time order.

    Raises:
        ConfigError: When the folder is not a generated cohort.
    """
    truth, cls = _cohort_classes(cohort_dir)
    want = {(s["student_id"], k) for s in truth["students"] for k in s.get("recorded", [])}
    keep = [(sid, k) in want for sid, k in zip(cls["student_id"], cls["_k"], strict=True)]
    cls = cls[keep]
    return pd.DataFrame({
        "session_id": [class_session_id(sid, k) for sid, k in
                       zip(cls["student_id"], cls["_k"], strict=True)],
        "student_id": cls["student_id"].to_numpy(),
        "teacher_id": cls["teacher_id"].to_numpy(),
        "start_time": cls["_t"].to_numpy(),
    }).reset_index(drop=True)


def generate_cohort(
    out: Path,
    n_students: int = 30,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    audio: bool = True,
    max_recorded_per_student: int | None = None,
    n_teachers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    params: CohortParams | None = None,
) -> CohortSummary:
    """Write a synthetic cohort: logs, and optionally two-track class recordings.

    Args:
        out: Output folder (created; when it holds a former cohort, that cohort is
            replaced; any other non-empty folder is refused).
        n_students: Students in the cohort.
        seed: Random seed; the same seed gives the same files.
        start: Start of the cohort (naive = UTC).
        audio: Voice recorded classes with espeak-ng and write ``recordings/``.
            Without audio the classes are still chosen for recording (the same
            ones; see :func:`recorded_sessions`), only nothing is voiced.
        max_recorded_per_student: At most this many recorded classes per student:
            the first ones chosen (``params.record_share`` decides each class);
            ``None``: no cap.
        n_teachers: Teachers; default ``max(2, n_students // 8)``.
        progress: Called as ``progress(done, total)`` after the logs are written
            (unit 1) and after each synthesised utterance and each written session.
        params: Knobs of the generative model (defaults: :class:`CohortParams`).

    Returns:
        A :class:`CohortSummary`.

    Raises:
        ConfigError: On invalid arguments or an unusable output folder.
        AtriskError: When audio is requested and espeak-ng is missing or fails.

    """
    p = params or CohortParams()
    if n_students < 1:
        raise ConfigError(f"n_students must be at least 1, got {n_students}")
    if not 0 <= p.record_share <= 1 or not 0 <= p.record_students <= 1:
        raise ConfigError(f"record_share and record_students must be in [0, 1], got "
                          f"{p.record_share} and {p.record_students}")
    if max_recorded_per_student is not None and max_recorded_per_student < 0:
        raise ConfigError(
            f"max_recorded_per_student must be >= 0, got {max_recorded_per_student}")
    n_teachers = max(2, n_students // 8) if n_teachers is None else n_teachers
    if n_teachers < 1:
        raise ConfigError(f"n_teachers must be at least 1, got {n_teachers}")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    start = start.astimezone(UTC)
    out = Path(out)
    synth = SpeechSynth(p.sample_rate) if audio else None  # fail early without espeak-ng
    _prepare_out(out)

    teachers = _teachers(n_teachers, np.random.default_rng([seed, 0]), p)
    students = [_simulate_student(i, teachers, seed, p) for i in range(n_students)]

    # recorded classes: chosen class by class, never from the outcome
    sessions: list[tuple[_Student, int, _Class]] = []
    recorded: dict[int, list[int]] = {}
    for s in students:
        ks = _recorded_indices(len(s.classes), p.record_share, max_recorded_per_student,
                               np.random.default_rng([seed, 5, s.idx]), p.record_first)
        if np.random.default_rng([seed, 6, s.idx]).random() >= p.record_students:
            ks = []
        recorded[s.idx] = ks
        if not audio:
            continue
        for k in ks:
            c = s.classes[k]
            c.session_id = class_session_id(s.student_id, k)
            sessions.append((s, k, c))
            for ev in s.events:
                if ev.kind == "class" and ev.t == c.t:
                    ev.session_id = c.session_id

    truth = {
        "seed": seed,
        "start": start.isoformat(timespec="seconds"),
        "cohort_end": _iso(start, p.cohort_days),
        "params": asdict(p),
        "teachers": [{"teacher_id": t.teacher_id, "engagement_shift": t.shift,
                      "note_rate": t.note_rate} for t in teachers],
        "students": [{
            "student_id": s.student_id,
            "teacher_id": teachers[s.teacher].teacher_id,
            "engagement": round(s.engagement, 6),
            "status": s.status,
            "dropout": s.status == "dropout",
            "dropout_time": _iso(start, s.dropout_at) if s.status == "dropout" else None,
            "decay_start": (_iso(start, s.dropout_at - s.decay_days)
                            if s.status == "dropout" else None),
            "n_courses": s.n_courses,
            "n_classes": len(s.classes),
            "class_engagement": [round(c.engagement, 4) for c in s.classes],
            "recorded": recorded[s.idx],
        } for s in students],
    }
    # written first: it also marks the folder as generator output (reruns may replace it)
    (out / _MARKER).write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")

    # logs
    logs = out / "logs"
    _write_csv(logs / "students.csv", STUDENT_COLUMNS,
               ((s.student_id, _iso(start, s.enrolled), s.grade) for s in students))
    _write_csv(logs / "orders.csv", ORDER_COLUMNS,
               ((f"O{s.idx + 1:04d}", s.student_id, _iso(start, s.ordered), s.n_courses,
                 f"{s.discount:.3f}", s.n_sales) for s in students))
    event_rows = []
    for s in students:
        for ev in s.events:
            value = None if ev.value is None else f"{ev.value:.1f}"
            event_rows.append((f"E{len(event_rows) + 1:06d}", s.student_id, _iso(start, ev.t),
                               ev.kind, ev.teacher_id, ev.session_id, ev.words, value))
    _write_csv(logs / "events.csv", EVENT_COLUMNS, event_rows)
    _write_csv(logs / "outcomes.csv", OUTCOME_COLUMNS,
               ((s.student_id, s.status, _iso(start, s.status_time)) for s in students))

    paths: dict[str, Path] = {"logs": logs, "ground_truth": out / _MARKER}

    # audio
    audio_seconds = 0.0
    if audio and synth is not None:
        t0 = time.perf_counter()
        rec = out / "recordings"
        rec.mkdir()
        plans = []
        for s, k, c in sessions:
            rng = np.random.default_rng([seed, 2, s.idx, k])
            teacher = teachers[s.teacher]
            voice = Voice("en-us+f4", s.pitch, student_speed(c.engagement))
            plans.append(plan_dialogue(c.engagement, rng, teacher.voice, voice,
                                       teacher.note_rate, p.max_turns))
        keys = list(dict.fromkeys(turn.key for plan in plans for turn in plan))
        total = 1 + len(keys) + len(sessions)
        done = 1
        if progress is not None:
            progress(done, total)

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        synth.prepare(keys, on_done=tick)
        utt_rows: list[dict[str, object]] = []
        for (s, k, c), plan in zip(sessions, plans, strict=True):
            rng = np.random.default_rng([seed, 3, s.idx, k])
            utt_rows += render_session(plan, synth, rec / c.session_id, rng, p.max_track_s,
                                       p.noise_dbfs, c.session_id)
            tick()
        _write_csv(rec / "sessions.csv", SESSION_MANIFEST_COLUMNS,
                   ((c.session_id, s.student_id, teachers[s.teacher].teacher_id,
                     _iso(start, c.t)) for s, _, c in sessions))
        _write_csv(out / "utterances.csv", UTTERANCE_COLUMNS,
                   ([r[col] for col in UTTERANCE_COLUMNS] for r in utt_rows))
        paths["recordings"] = rec
        paths["utterances"] = out / "utterances.csv"
        audio_seconds = time.perf_counter() - t0
    elif progress is not None:
        progress(1, 1)

    n_drop = sum(s.status == "dropout" for s in students)
    return CohortSummary(
        n_students=n_students,
        n_dropouts=n_drop,
        dropout_rate=n_drop / n_students,
        n_classes=sum(len(s.classes) for s in students),
        n_sessions=len(sessions),
        mean_span_days=float(np.mean([s.status_time - s.enrolled for s in students])),
        paths=paths,
        audio_seconds=audio_seconds,
    )


# --------------------------------------------------------------------------- paper scale

#: Paper-scale cohort (seed §5.1: 3,926 students, 16.39 % dropout, mean span ≈ 17 days,
#: ≈ 66,742 ``<student, day>`` pairs, ≈ 0.96 % positive at Δ = 1).  Same generative
#: model; the dropout time is drawn at least 5 days after the order and the first class
#: comes 1–2 days after it, so that almost every dropout has had a class and has pairs
#: (each dropout gives exactly one Δ = 1 positive); hazard and courses were chosen on
#: seed 0 to match the dropout rate and the number of pairs: 16.4 % dropout, 66,696
#: pairs, 0.91 % positive, mean span 19.3 days (longer than the seed's 17 because our
#: pairs start the day after the first class).  ``scripts/recipes/reproduce_k12.py`` prints
#: what it really gives.
PAPER_N_STUDENTS = 3926
PAPER_PARAMS = CohortParams(hazard_base=0.0062, courses_mean=6.3, first_class_days=(1, 2),
                            dropout_delay_days=5.0)

#: Columns of :func:`simulate_in_class` (all prefixed ``sim_``: simulated, not extracted).
SIMULATED_IN_CLASS_COLUMNS = (
    "sim_student_talk_ratio", "sim_student_words_per_min", "sim_response_latency_s",
    "sim_student_pitch_sd", "sim_teacher_questions", "sim_dont_know_count",
)


def simulate_in_class(cohort_dir: Path, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate in-class feature rows, one per class, driven by the class's engagement.

    At paper scale (≈ 20,000 classes) voicing every class and running the extractors
    is out of reach on a laptop, so the generator's own model of *extracted* features
    stands in: each class gets six values that are noisy linear functions of that
    class's current engagement (``ground_truth.json`` ``class_engagement``), in the
    direction the audio/text extractors see on the demo (an engaged student talks more
    and faster, answers sooner, says "I don't know" less).  Outputs built on them must
    say the in-class features are **simulated**.

    Args:
        cohort_dir: A folder written by :func:`generate_cohort`.
        seed: Random seed of the noise.

    Returns:
        ``(sessions, in_class)``: ``sessions`` has ``session_id``, ``student_id``,
        ``teacher_id``, ``start_time`` (one row per class event, in time order);
        ``in_class`` is indexed by ``session_id`` with the
        :data:`SIMULATED_IN_CLASS_COLUMNS`.

    Raises:
        ConfigError: When the folder has no ``ground_truth.json`` or ``logs/events.csv``.
    """
    truth, cls = _cohort_classes(cohort_dir)
    eng = {s["student_id"]: s["class_engagement"] for s in truth["students"]}
    e = np.array([eng.get(sid, [])[k] if k < len(eng.get(sid, [])) else np.nan
                  for sid, k in zip(cls["student_id"], cls["_k"], strict=True)], dtype=float)
    rng = np.random.default_rng([seed, 4])
    n = len(cls)

    def noisy(base: np.ndarray, sd: float) -> np.ndarray:
        return base + rng.normal(0.0, sd, n)

    values = {
        "sim_student_talk_ratio": np.clip(noisy(0.35 + 0.08 * e, 0.08), 0.0, 1.0),
        "sim_student_words_per_min": np.clip(noisy(95 + 18 * e, 20), 10, None),
        "sim_response_latency_s": np.clip(noisy(1.6 - 0.45 * e, 0.6), 0.1, None),
        "sim_student_pitch_sd": np.clip(noisy(22 + 4 * e, 6), 1, None),
        "sim_teacher_questions": np.clip(np.round(noisy(8 - 0.8 * e, 2.0)), 0, None),
        "sim_dont_know_count": rng.poisson(np.exp(0.1 - 0.7 * np.nan_to_num(e))).astype(float),
    }
    sid = (cls["student_id"] + "-SIM" + (cls["_k"] + 1).astype(str).str.zfill(3)).to_numpy()
    sessions = pd.DataFrame({
        "session_id": sid, "student_id": cls["student_id"].to_numpy(),
        "teacher_id": cls["teacher_id"].to_numpy(), "start_time": cls["_t"].to_numpy(),
    })
    in_class = pd.DataFrame(values, index=pd.Index(sid, name="session_id"))
    in_class.loc[np.isnan(e)] = np.nan
    return sessions, in_class
