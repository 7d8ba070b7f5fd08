"""The FastAPI service: students, sessions, events, jobs, daily risk lists, keys, access log.

Every ``/v1`` endpoint but ``/v1/health`` needs an API key in the ``X-API-Key`` header
(401 without a valid one, 429 past the key's rate limit).  A key belongs to an
organisation and sees only its data: another organisation's student, session or job is
404.  ``read`` keys call the GET endpoints, ``write`` keys also post data and run jobs,
``admin`` keys also erase students and manage keys (403 otherwise).  Invalid input gives
422 with the field named in ``detail[].loc`` (the input itself is never echoed); bodies
over the limits give 413.  Every request made with a key is written to the access log.
OpenAPI docs are at ``/docs``.  See docs/service.md.
"""

# No `from __future__ import annotations` here: FastAPI evaluates the endpoints'
# annotations, and the dependency aliases (Read, Write, ...) are local to create_app.

import asyncio
import json
import os
import tempfile
from contextlib import asynccontextmanager
from datetime import date as Date
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from atrisk.errors import ConfigError
from atrisk.registry import ASR_BACKENDS
from atrisk.serve.audit import AccessLog, AuditMiddleware
from atrisk.serve.erase import erase_student
from atrisk.serve.jobs import JobRunner
from atrisk.serve.keys import ID_PATTERN, KeyStore, Principal
from atrisk.serve.limits import BodyLimit, BodyTooLarge, RateLimiter
from atrisk.serve.paths import (
    DEFAULT_WORKSPACE,
    UPLOAD_EXTENSIONS,
    DataRoot,
    PathRejected,
    check_relative,
)
from atrisk.serve.store import Store
from atrisk.version import __version__
from atrisk.workspace import private_dir

#: Most items in one batch (students, orders, outcomes, events).
MAX_BATCH = 10_000
#: Largest horizon (days) accepted anywhere.
MAX_HORIZON = 3650
_INT32 = 2**31 - 1
_TRACK_UPLOAD = "/tracks/"


def _as_str(v: Any) -> Any:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


#: One id pattern for students, sessions, teachers, events, orders and organisations.
Id = Annotated[str, BeforeValidator(_as_str), Field(min_length=1, max_length=64,
                                                    pattern=ID_PATTERN)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _relative(v: str | None) -> str | None:
    return None if v is None else check_relative(v)


RelPath = Annotated[str, Field(max_length=512,
                               description="Path relative to the organisation's folder of "
                               "the data root (no absolute path, no '..').")]


@lru_cache(maxsize=1)
def _cpus() -> int:
    from atrisk.extract.resources import usable_cpus

    return usable_cpus()


class Event(BaseModel):
    """One platform event: a row of ``events.csv`` (docs/data.md, ``## Logs``)."""

    model_config = ConfigDict(extra="forbid")

    event_id: Id = Field(description="Unique id; re-sending the same event is a no-op.")
    student_id: Id = Field(description="A student known to the store.")
    time: datetime = Field(description="ISO 8601; without an offset it is UTC.")
    kind: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_ -]{1,64}$",
                      description="class, follow_up, reschedule, satisfaction, or any other "
                      "kind (kept, ignored by the features); compared in lower case.")
    teacher_id: Id | None = None
    session_id: Id | None = None
    words: int | None = Field(default=None, ge=0, le=1_000_000,
                              description="Words in a follow-up report.")
    value: Finite | None = Field(default=None, ge=-1e9, le=1e9,
                                 description="E.g. satisfaction 1–5.")

    @field_validator("kind")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()


class EventBatch(BaseModel):
    """Several events at once (validated together: one bad row rejects the batch)."""

    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


class EventResult(BaseModel):
    """What happened to one posted event."""

    event_id: str
    stored: bool
    duplicate: bool


class StudentIn(BaseModel):
    """A student: a row of ``students.csv`` (``enrolled_at`` is needed for scoring)."""

    model_config = ConfigDict(extra="forbid")
    student_id: Id
    enrolled_at: datetime | None = None
    grade: int | None = Field(default=None, ge=1, le=12)


class OrderIn(BaseModel):
    """A course order: a row of ``orders.csv``."""

    model_config = ConfigDict(extra="forbid")
    order_id: Id
    student_id: Id
    ordered_at: datetime
    n_courses: int = Field(ge=0, le=10_000)
    discount_ratio: Finite = Field(ge=0, le=1)
    n_sales_conversations: int = Field(ge=0, le=100_000)


class OutcomeIn(BaseModel):
    """A student's known outcome: a row of ``outcomes.csv``."""

    model_config = ConfigDict(extra="forbid")
    student_id: Id
    status: Literal["dropout", "completion", "ongoing"]
    status_time: datetime


class SessionIn(BaseModel):
    """A class session: a row of ``sessions.csv``; tracks uploaded later or named by path."""

    model_config = ConfigDict(extra="forbid")
    session_id: Id
    student_id: Id
    teacher_id: Id
    start_time: datetime
    teacher_path: RelPath | None = Field(default=None, description="The teacher track, "
                                         "relative to the organisation's folder of the "
                                         "data root; or upload it.")
    student_path: RelPath | None = None

    @field_validator("teacher_path", "student_path")
    @classmethod
    def _inside(cls, v: str | None) -> str | None:
        return _relative(v)


class ExtractJobIn(BaseModel):
    """An extract job: the store's sessions (or a recordings folder) → workspace tables."""

    model_config = ConfigDict(extra="forbid")
    workspace: RelPath = Field(default=DEFAULT_WORKSPACE, description="Workspace folder, "
                               "relative to the organisation's folder of the data root.")
    recordings: RelPath | None = Field(default=None, description="Recordings folder with "
                                       "sessions.csv (relative); omitted = the sessions "
                                       "posted to the store.")
    asr_backend: str = Field(default="pocketsphinx",
                             description="A name of atrisk.registry.ASR_BACKENDS.")
    workers: int = Field(default=1, ge=1, description="Worker processes, at most the CPUs "
                         "the service may use.")

    @field_validator("workspace", "recordings")
    @classmethod
    def _inside(cls, v: str | None) -> str | None:
        return _relative(v)

    @field_validator("asr_backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in ASR_BACKENDS:
            raise ValueError(f"unknown ASR backend; choose one of {', '.join(ASR_BACKENDS)}")
        return v

    @field_validator("workers")
    @classmethod
    def _cpus(cls, v: int) -> int:
        if v > _cpus():
            raise ValueError(f"at most {_cpus()} (the CPUs this service may use)")
        return v


class PredictJobIn(BaseModel):
    """A predict job: the store's data and the workspace's features → the day's risk lists."""

    model_config = ConfigDict(extra="forbid")
    date: Date = Field(description="The day to score (data before it is used).")
    horizons: list[Annotated[int, Field(ge=1, le=MAX_HORIZON)]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="Δ values (days); default: every horizon of the model.")
    workspace: RelPath = Field(default=DEFAULT_WORKSPACE, description="The workspace "
                               "whose in-class features are used (relative).")

    @field_validator("workspace")
    @classmethod
    def _inside(cls, v: str) -> str:
        return check_relative(v)


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

    model_config = ConfigDict(extra="forbid")
    student_id: Id
    probability: Finite = Field(ge=0, le=1)
    rank: int = Field(ge=1, le=_INT32)
    flagged: bool
    top_reasons: str | None = Field(default=None, max_length=2000)


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
    horizon: int = Field(ge=1, le=MAX_HORIZON)
    students: list[RiskRow] = Field(max_length=1_000_000)


class KeyIn(BaseModel):
    """A key to make (admin keys only)."""

    model_config = ConfigDict(extra="forbid")
    org_id: Id | None = Field(default=None, description="Its organisation (default: the "
                              "calling key's); created when new.")
    scope: Literal["read", "write", "admin"]
    expires_at: datetime | None = Field(default=None, description="When it stops working.")
    label: str | None = Field(default=None, max_length=200)


_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                       description="Key from `atrisk keys create` or `POST /v1/keys`.")


def _unprocessable(field: tuple, msg: str, kind: str = "value_error") -> HTTPException:
    return HTTPException(422, detail=[{"loc": list(field), "msg": msg, "type": kind}])


def _duplicates(ids: list[str], loc: tuple) -> None:
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise _unprocessable((*loc[:-1], i, loc[-1]), f"{x!r} is twice in the batch")
        seen.add(x)


def _batch(items: list, what: str) -> None:
    if len(items) > MAX_BATCH:
        raise _unprocessable(("body",), f"at most {MAX_BATCH} {what} per request "
                             f"(got {len(items)}); send several requests")


def create_app(store: Store, keys: KeyStore, root: DataRoot, model: Any | None = None,
               runner: JobRunner | None = None, start_jobs: bool = True,
               max_body_mb: float = 10, max_upload_mb: float = 256,
               rate_limit: float = 100, scheduler: Any | None = None) -> FastAPI:
    """Build the FastAPI app over an open store.

    Args:
        store: The open (writable) store.
        keys: The key store (looked up on every request).
        root: The data root: every path the API touches lies inside it.
        model: The loaded :class:`atrisk.training.model.RiskModel`; risk queries and
            predict jobs for horizons it was not trained on give 422.
        runner: Job runner (default: a new one over ``store``, ``root`` and ``model``).
        start_jobs: Recover interrupted jobs and start the worker thread at startup.
        max_body_mb: Largest JSON body, MB (413 past it).
        max_upload_mb: Largest uploaded track, MB (413 past it).
        rate_limit: Requests a second per key (bursts of twice that); 0: no limit.
        scheduler: A :class:`~atrisk.serve.jobs.Scheduler` started and stopped with the app.

    Returns:
        The app (serve it with uvicorn, one process: DuckDB has one writer).
    """
    runner = runner or JobRunner(store, root, model)
    horizons = list(model.horizons) if model is not None else None
    access = AccessLog(store)
    limiter = RateLimiter(rate_limit)
    max_upload = int(max_upload_mb * 2**20)
    upload_locks: dict[tuple, asyncio.Lock] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        keys.watch()
        access.start()
        if start_jobs:
            runner.recover()
            runner.start()
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.stop()
        runner.stop()
        access.stop()
        keys.stop_watching()

    app = FastAPI(
        title="atrisk", version=__version__, lifespan=lifespan,
        description="Dropout-risk lists of K-12 online-tutoring students. Send the API key "
        "in the X-API-Key header (read, write or admin scope of one organisation).",
    )
    app.state.store, app.state.runner, app.state.access_log = store, runner, access
    app.add_middleware(AuditMiddleware, access_log=access)
    app.add_middleware(BodyLimit, max_body=int(max_body_mb * 2**20), max_upload=max_upload,
                       is_upload=lambda path: _TRACK_UPLOAD in path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the field and the reason; never the input (it may be large, or someone's data)
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))[:300],
                   "type": e.get("type", "value_error")} for e in exc.errors()[:50]]
        return JSONResponse({"detail": detail}, status_code=422)

    async def principal(request: Request,
                        key: Annotated[str | None, Security(_HEADER)]) -> Principal:
        if not key:
            raise HTTPException(401, "missing API key (X-API-Key header)",
                                headers={"WWW-Authenticate": "APIKey"})
        who = keys.lookup(key)
        if who is None:
            raise HTTPException(401, "invalid, revoked or expired API key",
                                headers={"WWW-Authenticate": "APIKey"})
        wait = limiter.check(who.key_id)
        if wait:
            raise HTTPException(429, f"rate limit of this key passed; retry in {wait} s",
                                headers={"Retry-After": str(wait)})
        request.state.principal = who
        return who

    def need(scope: str, org: bool = True):
        async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            if not who.allows(scope):
                raise HTTPException(403, f"this API key has the {who.scope} scope; this "
                                    f"call needs {scope}")
            if org and who.org_id is None:
                raise HTTPException(403, "this admin key belongs to no organisation: use a "
                                    "key of the organisation whose data you want")
            return who
        return check

    Read = Annotated[Principal, Depends(need("read"))]
    Write = Annotated[Principal, Depends(need("write"))]
    OrgAdmin = Annotated[Principal, Depends(need("admin"))]
    Admin = Annotated[Principal, Depends(need("admin", org=False))]
    StudentId = Annotated[str, PathParam(pattern=ID_PATTERN, max_length=64)]

    def touched(request: Request, ids) -> None:
        request.state.students = list(ids)

    def need_students(org: str, ids: list[str], loc: list[tuple]) -> None:
        known = store.known_students(ids, org=org)
        for sid, where in zip(ids, loc, strict=True):
            if sid not in known:
                raise _unprocessable(where, f"unknown student {sid!r} (not in the store; "
                                     "POST /v1/students first)", "value_error.unknown_student")

    # ------------------------------------------------------------------ service

    @app.get("/v1/health", tags=["service"])
    def health() -> dict:
        """Liveness: version and model horizons (no key needed)."""
        return {"status": "ok", "version": __version__, "model_horizons": horizons}

    # ------------------------------------------------------------------ data

    @app.post("/v1/students", tags=["data"])
    def post_students(students: list[StudentIn], who: Write, request: Request) -> dict:
        """Add or update students (rows of students.csv), at most 10,000 per request."""
        _batch(students, "students")
        ids = [s.student_id for s in students]
        _duplicates(ids, ("body", "student_id"))
        touched(request, ids)
        n = store.upsert_students([s.model_dump() for s in students], org=who.org_id)
        return {"written": n}

    @app.post("/v1/orders", tags=["data"])
    def post_orders(orders: list[OrderIn], who: Write, request: Request) -> dict:
        """Add or replace course orders (rows of orders.csv), at most 10,000 per request."""
        _batch(orders, "orders")
        _duplicates([o.order_id for o in orders], ("body", "order_id"))
        ids = [o.student_id for o in orders]
        need_students(who.org_id, ids, [("body", i, "student_id") for i in range(len(ids))])
        touched(request, ids)
        return {"written": store.upsert_orders([o.model_dump() for o in orders],
                                               org=who.org_id)}

    @app.post("/v1/outcomes", tags=["data"])
    def post_outcomes(outcomes: list[OutcomeIn], who: Write, request: Request) -> dict:
        """Set students' outcomes (dropout, completion, ongoing); at most 10,000 per request."""
        _batch(outcomes, "outcomes")
        ids = [o.student_id for o in outcomes]
        _duplicates(ids, ("body", "student_id"))
        need_students(who.org_id, ids, [("body", i, "student_id") for i in range(len(ids))])
        touched(request, ids)
        return {"written": store.upsert_outcomes([o.model_dump() for o in outcomes],
                                                 org=who.org_id)}

    @app.post("/v1/sessions", tags=["data"], status_code=201)
    def post_session(session: SessionIn, who: Write, request: Request) -> dict:
        """Register a class session; upload its tracks after, or name them by relative path."""
        need_students(who.org_id, [session.student_id], [("body", "student_id")])
        for track in ("teacher_path", "student_path"):
            rel = getattr(session, track)
            if rel is not None:
                try:  # a symlink out of the data root is refused now (and again at the job)
                    root.resolve(who.org_id, rel, track)
                except PathRejected as exc:
                    raise _unprocessable(("body", track), exc.reason) from None
        touched(request, [session.student_id])
        store.upsert_session(session.model_dump(), org=who.org_id)
        return _session_out(store.session(session.session_id, org=who.org_id))

    @app.put("/v1/sessions/{session_id}/tracks/{track}", tags=["data"])
    async def upload_track(
        request: Request,
        who: Write,
        session_id: Annotated[str, PathParam(pattern=ID_PATTERN, max_length=64)],
        track: Literal["teacher", "student"],
        ext: Annotated[str, Query(max_length=8, description="File extension: "
                                  f"{', '.join(UPLOAD_EXTENSIONS)}.")] = "wav",
    ) -> dict:
        """Upload one track's audio (the request body is the file's bytes)."""
        ext = ext.lower()
        if ext not in UPLOAD_EXTENSIONS:
            raise _unprocessable(("query", "ext"), "not an audio extension the decoder reads; "
                                 f"use one of {', '.join(UPLOAD_EXTENSIONS)}")
        org = who.org_id
        sess = await run_in_threadpool(store.session, session_id, org=org)
        if sess is None:
            raise HTTPException(404, f"unknown session {session_id!r}: POST /v1/sessions first")
        touched(request, [sess["student_id"]])
        folder = private_dir(root.uploads(org, session_id))
        fd, tmp = tempfile.mkstemp(prefix=f".{track}.", suffix=".part", dir=folder)
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload:
                        raise BodyTooLarge(max_upload)
                    fh.write(chunk)
            if size == 0:
                raise _unprocessable(("body",), "empty upload")
            target = folder / f"{track}.{ext}"
            lock = upload_locks.setdefault((org, session_id, track), asyncio.Lock())
            async with lock:  # rename, clean up and record one upload of a track at a time
                os.replace(tmp, target)
                for other in folder.glob(f"{track}.*"):
                    if other != target and other.suffix.lstrip(".") in UPLOAD_EXTENSIONS:
                        other.unlink(missing_ok=True)
                rel = f"uploads/{session_id}/{track}.{ext}"
                await run_in_threadpool(store.set_track_path, session_id, track, rel, org=org)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return {"session_id": session_id, "track": track, "path": rel, "bytes": size}

    @app.post("/v1/events", tags=["data"])
    def post_event(event: Event, who: Write, request: Request) -> EventResult:
        """Store one event.

        Re-sending a stored event id is a no-op (200, ``duplicate: true``); the same
        id with other content is 409.
        """
        need_students(who.org_id, [event.student_id], [("body", "student_id")])
        touched(request, [event.student_id])
        status = store.add_events([event.model_dump()], org=who.org_id)[0]
        if status == "conflict":
            raise HTTPException(409, f"event_id {event.event_id!r} is already stored with "
                                "other content")
        return EventResult(event_id=event.event_id, stored=status == "stored",
                           duplicate=status == "duplicate")

    @app.post("/v1/events/batch", tags=["data"])
    def post_events(batch: EventBatch, who: Write, request: Request) -> dict:
        """Store up to 10,000 events at once (any order of times).

        Per event: stored, duplicate (same id and content) or conflict (listed).
        """
        ids = [e.student_id for e in batch.events]
        need_students(who.org_id, ids,
                      [("body", "events", i, "student_id") for i in range(len(ids))])
        touched(request, ids)
        statuses = store.add_events([e.model_dump() for e in batch.events], org=who.org_id)
        return {
            "stored": statuses.count("stored"), "duplicate": statuses.count("duplicate"),
            "conflict": [e.event_id for e, s in zip(batch.events, statuses, strict=True)
                         if s == "conflict"],
        }

    # ------------------------------------------------------------------ jobs

    @app.post("/v1/jobs/extract", tags=["jobs"], status_code=202)
    def post_extract(job: ExtractJobIn, who: Write) -> Job:
        """Queue an extract run (recordings → the organisation's workspace tables)."""
        for field in ("workspace", "recordings"):
            rel = getattr(job, field)
            if rel is not None:
                try:
                    root.resolve(who.org_id, rel, field,
                                 must_exist="dir" if field == "recordings" else None)
                except PathRejected as exc:
                    raise _unprocessable(("body", field), exc.reason) from None
        return Job(**runner.submit("extract", job.model_dump(), who.org_id))

    @app.post("/v1/jobs/predict", tags=["jobs"], status_code=202)
    def post_predict(job: PredictJobIn, who: Write) -> Job:
        """Queue a scoring run: the store's data → the day's risk lists (``GET /v1/risk``)."""
        for i, h in enumerate(job.horizons or []):
            if horizons is not None and h not in horizons:
                raise _unprocessable(("body", "horizons", i), f"the model has no horizon {h}; "
                                     f"trained horizons are {horizons}")
        try:
            root.resolve(who.org_id, job.workspace, "workspace")
        except PathRejected as exc:
            raise _unprocessable(("body", "workspace"), exc.reason) from None
        return Job(**runner.submit("predict", job.model_dump(mode="json"), who.org_id))

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: Annotated[str, PathParam(max_length=64)], who: Read) -> Job:
        """Return a job's state: queued, running, done (with a summary) or failed (with why)."""
        job = store.job(job_id, org=who.org_id)
        if job is None:
            raise HTTPException(404, f"unknown job {job_id!r}")
        return Job(**job)

    # ------------------------------------------------------------------ risk

    @app.get("/v1/risk", tags=["risk"], response_model=RiskList)
    async def get_risk(
        request: Request,
        who: Read,
        date: Annotated[Date, Query(description="Day, YYYY-MM-DD.")],
        horizon: Annotated[int, Query(ge=1, le=MAX_HORIZON, description="Δ in days.")] = 1,
        limit: Annotated[int, Query(ge=1, le=10_000, description="Page size.")] = 100,
        offset: Annotated[int, Query(ge=0, le=_INT32,
                                     description="Rows to skip (0 = rank 1).")] = 0,
        flagged: Annotated[bool, Query(description="Only flagged students.")] = False,
    ) -> Response:
        """Return a page of a day's ranked list (highest risk first): probability, flag, reasons.

        ``total`` counts the whole list; empty when no list was written for that day.
        """
        if horizons is not None and horizon not in horizons:
            raise _unprocessable(("query", "horizon"), f"the model has no horizon {horizon}; "
                                 f"trained horizons are {horizons}")
        org = who.org_id
        # The hot path: the day's list is in memory with its rows JSON-encoded once
        # (Store.risk_day); a page is a slice joined into the body, no per-row model.
        day = store.risk_day(date, horizon, org=org, cached_only=True)
        if day is None:  # not in memory yet: one DuckDB query, off the event loop
            day = await run_in_threadpool(store.risk_day, date, horizon, org=org)
        total, idx = day.page(limit, offset, flagged)
        touched(request, [day.rows[i][0] for i in idx])
        head = json.dumps({"date": date.isoformat(), "horizon": horizon, "total": total,
                           "offset": offset, "limit": limit})
        body = b"".join((head[:-1].encode(), b', "students": [',
                         b", ".join([day.encoded[i] for i in idx]), b"]}"))
        return Response(body, media_type="application/json")

    @app.put("/v1/risk", tags=["risk"])
    def put_risk(body: RiskListIn, who: Write, request: Request) -> dict:
        """Replace a day's list (the organisation's students only)."""
        import pandas as pd

        ids = [r.student_id for r in body.students]
        _duplicates(ids, ("body", "students", "student_id"))
        need_students(who.org_id, ids,
                      [("body", "students", i, "student_id") for i in range(len(ids))])
        touched(request, ids)
        df = pd.DataFrame([r.model_dump() for r in body.students],
                          columns=list(RiskRow.model_fields))
        try:
            n = store.write_risk(df, body.date, body.horizon, org=who.org_id,
                                 create_students=False)
        except ConfigError as exc:
            raise _unprocessable(("body", "students"), str(exc)) from None
        return {"written": n}

    @app.get("/v1/students/{student_id}", tags=["risk"])
    async def get_student(
        student_id: StudentId, who: Read, request: Request,
        events_limit: Annotated[int, Query(ge=1, le=1000, description="Events per page.")] = 100,
        events_offset: Annotated[int, Query(ge=0, le=_INT32,
                                            description="Events skipped (by time).")] = 0,
    ) -> dict:
        """Return a student's risk history, a page of events (by time) and counts."""
        touched(request, [student_id])
        # On the event loop: a few point lookups (about 2 ms) cost less here than the
        # hand-off to a worker thread and back, which set the latency under load.
        out = store.student(student_id, org=who.org_id, events_limit=events_limit,
                            events_offset=events_offset)
        if out is None:
            raise HTTPException(404, f"unknown student {student_id!r}")
        return out

    @app.delete("/v1/students/{student_id}", tags=["risk"])
    def delete_student(student_id: StudentId, who: OrgAdmin, request: Request) -> dict:
        """Erase a student everywhere (store, uploads, workspace rows, part files); report it.

        409 while a job runs (retry after it); the access log keeps its entries.
        """
        touched(request, [student_id])
        if not runner.busy.acquire(blocking=False):
            raise HTTPException(409, "a job is running; retry when it is done",
                                headers={"Retry-After": "30"})
        try:
            out = erase_student(store, root, who.org_id, student_id)
        finally:
            runner.busy.release()
        if out is None:
            raise HTTPException(404, f"unknown student {student_id!r}")
        return out

    # ------------------------------------------------------------------ keys, audit

    def key_org(who: Principal, org_id: str | None) -> str | None:
        if who.org_id is not None and org_id not in (None, who.org_id):
            raise HTTPException(403, "this admin key manages its own organisation only")
        return org_id if org_id is not None else who.org_id

    @app.post("/v1/keys", tags=["admin"], status_code=201)
    def post_key(body: KeyIn, who: Admin) -> dict:
        """Make a key (shown once in the answer); an organisation admin only for its own."""
        org = key_org(who, body.org_id)
        try:
            new = keys.create_key(body.scope, org, body.expires_at, body.label)
        except ConfigError as exc:
            field = "expires_at" if "expiry" in str(exc) else "org_id"
            raise _unprocessable(("body", field), str(exc)) from None
        return {"key_id": new.key_id, "org_id": new.org_id, "scope": new.scope,
                "expires_at": new.expires_at, "key": new.key}

    @app.get("/v1/keys", tags=["admin"])
    def list_keys(who: Admin) -> dict:
        """List keys (never the keys themselves): the organisation's, or all for the operator."""
        return {"keys": keys.list_keys(who.org_id)}

    @app.delete("/v1/keys/{key_id}", tags=["admin"])
    def revoke_key(key_id: Annotated[str, PathParam(max_length=64)], who: Admin) -> dict:
        """Revoke a key at once."""
        if not keys.revoke(key_id, who.org_id):
            raise HTTPException(404, f"no active key {key_id!r}")
        return {"key_id": key_id, "revoked": True}

    @app.get("/v1/access-log", tags=["admin"])
    def get_access_log(
        who: Admin,
        student_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
        key_id: Annotated[str | None, Query(max_length=64)] = None,
        org_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64,
                                            description="Operator keys only.")] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0, le=_INT32)] = 0,
    ) -> dict:
        """Return the access log, newest first: key id, endpoint, status, students touched."""
        org = key_org(who, org_id)
        access.flush()
        total, rows = store.access_log(org=org, student_id=student_id, key_id=key_id,
                                       since=since, until=until, limit=limit, offset=offset)
        return {"total": total, "offset": offset, "limit": limit, "entries": rows}

    return app


def _session_out(row: dict | None) -> dict:
    """Return a stored session as the API shows it (paths relative to the org's folder)."""
    return {k: v for k, v in (row or {}).items() if k not in ("purged_at",)}
