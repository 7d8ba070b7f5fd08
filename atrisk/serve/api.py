"""The FastAPI service: sessions, events, extract jobs, daily risk lists, student history.

Every ``/v1`` endpoint needs an API key in the ``X-API-Key`` header (401
without a valid one); ``read`` keys may call the GET endpoints, ``write`` keys
everything (403 otherwise).  Invalid input gives 422 with the field named in
``detail[].loc``.  OpenAPI docs are at ``/docs``.  See docs/service.md.
"""

from __future__ import annotations

import hmac
import json
import re
from contextlib import asynccontextmanager
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from atrisk.errors import ConfigError
from atrisk.registry import ASR_BACKENDS
from atrisk.serve.jobs import JobRunner
from atrisk.serve.store import Store, hash_key
from atrisk.version import __version__

_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


def _as_str(v: Any) -> Any:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


Id = Annotated[str, BeforeValidator(_as_str), Field(min_length=1, max_length=128,
                                                    pattern=_ID.pattern)]


class Event(BaseModel):
    """One platform event: a row of ``events.csv`` (docs/data.md, ``## Logs``)."""

    model_config = ConfigDict(extra="forbid")

    event_id: Id = Field(description="Unique id; re-sending the same event is a no-op.")
    student_id: Id = Field(description="A student known to the store.")
    time: datetime = Field(description="ISO 8601; without an offset it is UTC.")
    kind: str = Field(min_length=1, max_length=64,
                      description="class, follow_up, reschedule, satisfaction, or any other "
                      "kind (kept, ignored by the features); compared in lower case.")
    teacher_id: Id | None = None
    session_id: Id | None = None
    words: int | None = Field(default=None, ge=0, description="Words in a follow-up report.")
    value: float | None = Field(default=None, description="E.g. satisfaction 1–5.")

    @field_validator("kind")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()


class EventBatch(BaseModel):
    """Several events at once (validated together: one bad row rejects the batch)."""

    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=10_000)


class EventResult(BaseModel):
    """What happened to one posted event."""

    event_id: str
    stored: bool
    duplicate: bool


class StudentIn(BaseModel):
    """A student: a row of ``students.csv``."""

    model_config = ConfigDict(extra="forbid")
    student_id: Id
    enrolled_at: datetime | None = None
    grade: int | None = Field(default=None, ge=1, le=12)


class SessionIn(BaseModel):
    """A class session: a row of ``sessions.csv``; tracks as paths or uploaded later."""

    model_config = ConfigDict(extra="forbid")
    session_id: Id
    student_id: Id
    teacher_id: Id
    start_time: datetime
    teacher_path: str | None = Field(default=None, description="Absolute path of the "
                                     "teacher track on the service machine, or upload it.")
    student_path: str | None = None

    @field_validator("teacher_path", "student_path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_absolute():
            raise ValueError("must be an absolute path on the service machine")
        return v


class ExtractJobIn(BaseModel):
    """An extract job: recordings folder (or the store's sessions) → workspace tables."""

    model_config = ConfigDict(extra="forbid")
    workspace: str = Field(description="Workspace folder on the service machine (absolute).")
    recordings: str | None = Field(default=None, description="Recordings folder with "
                                   "sessions.csv; omitted = the sessions posted to the store.")
    asr_backend: str = Field(default="pocketsphinx",
                             description="A name of atrisk.registry.ASR_BACKENDS.")
    workers: int = Field(default=1, ge=1, le=64)

    @field_validator("asr_backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in ASR_BACKENDS:
            raise ValueError(f"unknown ASR backend {v!r}; choose one of {', '.join(ASR_BACKENDS)}")
        return v

    @field_validator("workspace", "recordings")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_absolute():
            raise ValueError("must be an absolute path on the service machine")
        return v


class Job(BaseModel):
    """A background job's persisted state."""

    job_id: str
    kind: str
    state: Literal["queued", "running", "done", "failed"]
    params: dict
    result: dict | None = None
    error: str | None = None
    attempts: int
    created_at: datetime
    updated_at: datetime


class RiskRow(BaseModel):
    """One student in a day's ranked list."""

    student_id: str
    probability: float
    rank: int
    flagged: bool
    top_reasons: str | None


class RiskList(BaseModel):
    """A page of a day's ranked list."""

    date: Date
    horizon: int
    total: int = Field(description="Students in the day's list (flagged ones only with "
                       "`flagged=true`); page through them with offset/limit.")
    offset: int
    limit: int
    students: list[RiskRow]


class RiskListIn(BaseModel):
    """A day's full ranked list, replacing any list stored for that day and horizon."""

    model_config = ConfigDict(extra="forbid")
    date: Date
    horizon: int = Field(ge=1)
    students: list[RiskRow] = Field(max_length=1_000_000)


_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                       description="Key from `atrisk keys create`.")


def _unprocessable(field: tuple, msg: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(422, detail=[{"loc": list(field), "msg": msg, "type": kind}])


def create_app(store: Store, model: Any | None = None, upload_dir: Path | None = None,
               runner: JobRunner | None = None, start_jobs: bool = True) -> FastAPI:
    """Build the FastAPI app over an open store.

    Args:
        store: The open (writable) store.
        model: The loaded :class:`atrisk.training.model.RiskModel`; when given,
            risk queries for horizons it was not trained on give 422.
        upload_dir: Where uploaded tracks are written (default: ``<db>.files/``).
        runner: Job runner (default: a new one over ``store``).
        start_jobs: Recover interrupted jobs and start the worker thread at startup.

    Returns:
        The app (serve it with uvicorn, one process: DuckDB has one writer).
    """
    runner = runner or JobRunner(store)
    upload_dir = Path(upload_dir or store.path.with_name(store.path.name + ".files"))
    horizons = list(model.horizons) if model is not None else None
    keys = {"cache": store.key_scopes()}  # no other process can add keys while we hold the file

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_jobs:
            runner.recover()
            runner.start()
        yield
        runner.stop()

    app = FastAPI(
        title="atrisk", version=__version__, lifespan=lifespan,
        description="Dropout-risk lists of K-12 online-tutoring students. Send the API key "
        "in the X-API-Key header (read or write scope).",
    )
    app.state.store, app.state.runner = store, runner

    def scope_of(key: str | None) -> str:
        if not key:
            raise HTTPException(401, "missing API key (X-API-Key header)",
                                headers={"WWW-Authenticate": "APIKey"})
        digest = hash_key(key)
        for stored, scope in keys["cache"].items():
            if hmac.compare_digest(stored, digest):
                return scope
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "APIKey"})

    # async: a key check is a hash, not worth a hop through the thread pool
    async def reader(key: Annotated[str | None, Security(_HEADER)]) -> str:
        return scope_of(key)

    async def writer(key: Annotated[str | None, Security(_HEADER)]) -> str:
        scope = scope_of(key)
        if scope != "write":
            raise HTTPException(403, "this API key has the read scope; this call needs write")
        return scope

    Read = Depends(reader)
    Write = Depends(writer)

    def need_students(ids: list[str], loc: list[tuple]) -> None:
        known = store.known_students(ids)
        for sid, where in zip(ids, loc, strict=True):
            if sid not in known:
                raise _unprocessable(where, f"unknown student {sid!r} (not in the store; "
                                     "POST /v1/students first)", "value_error.unknown_student")

    @app.get("/v1/health", tags=["service"])
    def health() -> dict:
        """Liveness: version, store file, model horizons (no key needed)."""
        return {"status": "ok", "version": __version__, "db": str(store.path),
                "model_horizons": horizons}

    @app.post("/v1/students", tags=["data"], dependencies=[Write])
    def post_students(students: list[StudentIn]) -> dict:
        """Add or update students (rows of students.csv)."""
        n = store.upsert_students([s.model_dump() for s in students])
        return {"written": n}

    @app.post("/v1/sessions", tags=["data"], dependencies=[Write], status_code=201)
    def post_session(session: SessionIn) -> dict:
        """Register a class session; give track paths here or upload the tracks after."""
        need_students([session.student_id], [("body", "student_id")])
        store.upsert_session(session.model_dump())
        return store.session(session.session_id)

    @app.put("/v1/sessions/{session_id}/tracks/{track}", tags=["data"], dependencies=[Write])
    async def upload_track(
        request: Request,
        session_id: Annotated[str, PathParam(pattern=_ID.pattern)],
        track: Literal["teacher", "student"],
        ext: Annotated[str, Query(pattern=r"^[a-z0-9]{1,5}$",
                                  description="File extension: wav, flac, mp3, ogg, mp4…")] = "wav",
    ) -> dict:
        """Upload one track's audio (the request body is the file's bytes)."""
        if store.session(session_id) is None:
            raise HTTPException(404, f"unknown session {session_id!r}: POST /v1/sessions first")
        target = upload_dir / session_id / f"{track}.{ext}"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        size = 0
        with open(tmp, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                fh.write(chunk)
        if size == 0:
            tmp.unlink()
            raise _unprocessable(("body",), "empty upload")
        tmp.replace(target)
        store.set_track_path(session_id, track, str(target.resolve()))
        return {"session_id": session_id, "track": track, "path": str(target), "bytes": size}

    @app.post("/v1/events", tags=["data"], dependencies=[Write])
    def post_event(event: Event) -> EventResult:
        """Store one event.

        Re-sending a stored event id is a no-op (200, ``duplicate: true``); the same
        id with other content is 409.
        """
        need_students([event.student_id], [("body", "student_id")])
        status = store.add_events([event.model_dump()])[0]
        if status == "conflict":
            raise HTTPException(409, f"event_id {event.event_id!r} is already stored with "
                                "other content")
        return EventResult(event_id=event.event_id, stored=status == "stored",
                           duplicate=status == "duplicate")

    @app.post("/v1/events/batch", tags=["data"], dependencies=[Write])
    def post_events(batch: EventBatch) -> dict:
        """Store many events at once (any order of times); per event: stored/duplicate/conflict."""
        ids = [e.student_id for e in batch.events]
        need_students(ids, [("body", "events", i, "student_id") for i in range(len(ids))])
        statuses = store.add_events([e.model_dump() for e in batch.events])
        return {
            "stored": statuses.count("stored"), "duplicate": statuses.count("duplicate"),
            "conflict": [e.event_id for e, s in zip(batch.events, statuses, strict=True)
                         if s == "conflict"],
        }

    @app.post("/v1/jobs/extract", tags=["jobs"], dependencies=[Write], status_code=202)
    def post_extract(job: ExtractJobIn) -> Job:
        """Queue an extract run (recordings → workspace tables) in the background."""
        return Job(**runner.submit("extract", job.model_dump()))

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[Read])
    def get_job(job_id: str) -> Job:
        """Return a job's state: queued, running, done (with a summary) or failed (with why)."""
        job = store.job(job_id)
        if job is None:
            raise HTTPException(404, f"unknown job {job_id!r}")
        return Job(**job)

    @app.get("/v1/risk", tags=["risk"], dependencies=[Read], response_model=RiskList)
    async def get_risk(
        date: Annotated[Date, Query(description="Day, YYYY-MM-DD.")],
        horizon: Annotated[int, Query(ge=1, description="Δ in days.")] = 1,
        limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 100,
        offset: Annotated[int, Query(ge=0, description="Rows to skip (0 = rank 1).")] = 0,
        flagged: Annotated[bool, Query(description="Only flagged students.")] = False,
    ) -> Response:
        """Return a page of a day's ranked list (highest risk first): probability, flag, reasons.

        ``total`` counts the whole list; empty when no list was written for that day.
        """
        if horizons is not None and horizon not in horizons:
            raise _unprocessable(("query", "horizon"), f"the model has no horizon {horizon}; "
                                 f"trained horizons are {horizons}")
        # The hot path: the day's list is in memory with its rows JSON-encoded once
        # (Store.risk_day); a page is a slice joined into the body, no per-row model.
        day = store.risk_day(date, horizon, cached_only=True)
        if day is None:  # not in memory yet: one DuckDB query, off the event loop
            day = await run_in_threadpool(store.risk_day, date, horizon)
        total, idx = day.page(limit, offset, flagged)
        head = json.dumps({"date": date.isoformat(), "horizon": horizon, "total": total,
                           "offset": offset, "limit": limit})
        body = b"".join((head[:-1].encode(), b', "students": [',
                         b", ".join([day.encoded[i] for i in idx]), b"]}"))
        return Response(body, media_type="application/json")

    @app.put("/v1/risk", tags=["risk"], dependencies=[Write])
    def put_risk(body: RiskListIn) -> dict:
        """Replace a day's list (as `atrisk predict --db` does when the service is down)."""
        import pandas as pd

        df = pd.DataFrame([r.model_dump() for r in body.students],
                          columns=list(RiskRow.model_fields))
        try:
            n = store.write_risk(df, body.date, body.horizon)
        except ConfigError as exc:
            raise _unprocessable(("body", "students"), str(exc)) from None
        return {"written": n}

    @app.get("/v1/students/{student_id}", tags=["risk"], dependencies=[Read])
    def get_student(student_id: str) -> dict:
        """Return a student's risk history, events (by time) and session count."""
        out = store.student(student_id)
        if out is None:
            raise HTTPException(404, f"unknown student {student_id!r}")
        return out

    return app
