"""Xylem's Python guest helper: write tasks as plain functions of their
parsed JSON arguments; the helper implements the `plugin` world's
`handler` (describe and run) for componentize-py.

    from xylem import Handler, Reject, Retry, log, task

    @task("hello.greet", description="Returns a greeting for `name`")
    def greet(info, args):
        if not str(args.get("name", "")).strip():
            raise Reject("`name` must be a non-empty string")
        log(f"greeting {args['name']}")
        return f"Hello, {args['name']}!"

A task returns any JSON-serialisable value. It ends its job with:
- `raise Reject(reason)`: the job can never succeed (no retry);
- `raise Retry(reason, delay_ms=None)`: try again (counts as an attempt);
- any other exception: a failure (`plugin-error`, retried per the task's
  policy) whose reason is the exception, with its traceback in the log —
  never a trap.

Import every module a task needs at the top of the app module:
componentize-py bundles what the app imports when it is built, and a
module first imported inside a function is missing at run time.
"""

import json
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Callback,
    EnqueueOptions,
    Level,
    RetryRequest,
    TaskError_Fail,
    TaskError_Reject,
    TaskError_Retry,
    TaskOptions,
    TaskSpec,
    Unique,
)

__all__ = [
    "Handler",
    "Reject",
    "Retry",
    "EnqueueRefused",
    "Level",
    "log",
    "progress",
    "heartbeat",
    "enqueue",
    "submit_canvas",
    "task",
]


class Reject(Exception):
    """The job can never succeed: it ends `failed`, without a retry."""


class Retry(Exception):
    """Try the job again (after `delay_ms` if given); counts as an attempt."""

    def __init__(self, reason, delay_ms=None):
        super().__init__(reason)
        self.delay_ms = delay_ms


# name -> (function, description, TaskOptions keyword arguments)
_TASKS = {}

# The WIT `task-options` fields, in their order.
_OPTION_NAMES = (
    "queue",
    "priority",
    "max_retries",
    "retry_backoff_ms",
    "retry_backoff_max_ms",
    "soft_time_limit_ms",
    "hard_time_limit_ms",
    "fuel",
    "max_memory_bytes",
    "rate_limit",
    "retry_jitter",
    "visibility_timeout_ms",
    "expires_ms",
    "unique_for_ms",
    "ignore_result",
)


def task(name, description=None, args_schema=None, **options):
    """Declares a task: `options` are the WIT `task-options` fields
    (`max_retries=5`, `queue="emails"`, ...); `args_schema` a JSON Schema
    (a dict) its arguments must match."""
    unknown = set(options) - set(_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown task options {sorted(unknown)} (known: {_OPTION_NAMES})")

    def register(fn):
        _TASKS[name] = (fn, description, options, args_schema)
        return fn

    return register


# The WIT `enqueue-options` fields, in their order.
_ENQUEUE_OPTION_NAMES = (
    "queue",
    "priority",
    "delay_ms",
    "max_retries",
    "retry_backoff_ms",
    "retry_backoff_max_ms",
    "retry_jitter",
    "soft_time_limit_ms",
    "hard_time_limit_ms",
    "fuel",
    "max_memory_bytes",
    "visibility_timeout_ms",
    "expires_ms",
    "unique",
    "ignore_result",
    "link",
    "link_error",
)


class EnqueueRefused(Exception):
    """`enqueue` was refused; nothing was enqueued. `kind` is one of
    `quota-exceeded`, `unknown-task`, `invalid-arguments`, `unavailable`."""

    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def _callback(spec):
    """`"task"` or `{"task": ..., "args": {...}, "queue": ..., "priority": ...}`."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return Callback(spec, None, None, None)
    args = spec.get("args")
    return Callback(
        spec["task"],
        None if args is None else json.dumps(args),
        spec.get("queue"),
        spec.get("priority"),
    )


def enqueue(task, args=None, **options):
    """Enqueues a child job; returns `(id, duplicate)` — `duplicate` is
    True when a `unique` equal job exists (nothing was enqueued; the id is
    that job's). `options` are the WIT `enqueue-options` by name
    (`queue="emails"`, `delay_ms=5000`, `expires_ms=...`,
    `unique={"key": None, "ttl_ms": 60000}`, `link="task"` or
    `link={"task": ..., "args": {...}}`, `link_error=...`). Raises
    `EnqueueRefused` when the host says no."""
    unknown = set(options) - set(_ENQUEUE_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown enqueue options {sorted(unknown)} (known: {_ENQUEUE_OPTION_NAMES})")
    values = dict(options)
    unique = values.get("unique")
    if unique is not None:
        values["unique"] = Unique(unique.get("key"), unique["ttl_ms"])
    for name in ("link", "link_error"):
        values[name] = _callback(values.get(name))
    wit_options = EnqueueOptions(*[values.get(n) for n in _ENQUEUE_OPTION_NAMES]) if options else None
    try:
        done = host.enqueue(task, json.dumps({} if args is None else args), wit_options)
    except Err as e:
        raise _refused(e) from None
    return done.id, done.duplicate


def submit_canvas(definition):
    """Enqueues a canvas — chains, groups and chords, nested — given as a
    dict in the format of `xylem canvas submit` (docs/canvas.md), e.g.
    `{"kind": "chain", "steps": [{"kind": "task", "task": "a", "args": {...}},
    {"kind": "task", "task": "b"}]}`; returns its id. Every task in it counts
    against this run's child quota. Raises `EnqueueRefused`."""
    try:
        return host.submit_canvas(json.dumps(definition))
    except Err as e:
        raise _refused(e) from None


def _refused(error):
    """The host's `enqueue-error` (an `Err`) as `EnqueueRefused`: the
    variant's name (`EnqueueError_QuotaExceeded`) as its WIT kind."""
    refusal = error.value
    kind = type(refusal).__name__.split("_", 1)[-1]
    kind = "".join("-" + c.lower() if c.isupper() else c for c in kind).lstrip("-")
    return EnqueueRefused(kind, refusal.value)


def log(message, level=Level.INFO):
    """A line in the job's log."""
    host.log(level, str(message))


def progress(percent, message=None):
    """Reports progress (0 to 100) to the job's record."""
    host.progress(float(percent), message)


def heartbeat():
    """Tells the worker this job is alive (long loops)."""
    host.heartbeat()


class Handler(exports.Handler):
    """The `handler` export: describe() lists the tasks declared with
    `@task`; run() calls one and turns its return or exception into the
    WIT result."""

    def describe(self):
        specs = []
        for name, (_, description, options, schema) in _TASKS.items():
            values = [options.get(field) for field in _OPTION_NAMES]
            specs.append(
                TaskSpec(
                    name=name,
                    description=description,
                    options=TaskOptions(*values),
                    args_schema=None if schema is None else json.dumps(schema),
                )
            )
        return specs

    def run(self, info, args):
        entry = _TASKS.get(info.name)
        if entry is None:
            known = ", ".join(_TASKS) or "none"
            raise Err(TaskError_Reject(f"this plugin has no task named `{info.name}` (it has: {known})"))
        try:
            return json.dumps(entry[0](info, json.loads(args)))
        except Err:
            raise
        except Reject as e:
            raise Err(TaskError_Reject(str(e)))
        except Retry as e:
            raise Err(TaskError_Retry(RetryRequest(str(e), e.delay_ms)))
        except Exception as e:  # noqa: BLE001 - every failure ends the job, never a trap
            host.log(Level.ERROR, traceback.format_exc())
            raise Err(TaskError_Fail(f"{type(e).__name__}: {e}"))
