"""The `hello` example in Python: py.greet, py.echo, py.flaky, py.fanout — the same
tasks as plugins/hello (Rust: hello.*), c/ (c.*) and javascript/ (js.*),
under names of their own so that all four can be pushed side by side.

Build:  xylem plugin build plugins/python
(needs componentize-py: pip install componentize-py==0.25.1)
"""

from xylem import Handler, Reject, enqueue, log, task  # noqa: F401 - Handler is the export

__all__ = ["Handler"]


@task("py.greet", description="Returns a greeting for `name`")
def greet(info, args):
    name = args.get("name") if isinstance(args, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise Reject("`name` must be a non-empty string")
    log(f"greeting {name}")
    return f"Hello, {name}!"


@task("py.echo", description="Returns its arguments unchanged")
def echo(info, args):
    return args


# Interpreted code burns fuel fast: a budget of its own.
@task(
    "py.flaky",
    description="Fails its first `fail_times` attempts, then succeeds",
    max_retries=5,
    fuel=200_000_000_000,
)
def flaky(info, args):
    fail_times = args.get("fail_times") if isinstance(args, dict) else None
    if not isinstance(fail_times, int):
        raise Reject("`fail_times` must be a number")
    if info.attempt <= fail_times:
        raise RuntimeError(f"attempt {info.attempt} of a task set to fail {fail_times} time(s)")
    return f"succeeded on attempt {info.attempt}"


@task("py.fanout", description="Enqueues py.greet for each of `names`, unique per name, linked to py.echo")
def fanout(info, args):
    return [
        list(enqueue("py.greet", {"name": name}, unique={"key": None, "ttl_ms": 60_000}, link="py.echo"))
        for name in args.get("names", [])
    ]
