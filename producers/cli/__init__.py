"""The ``captionq`` command line: the one entry point, a sub-command per job to do.

Expected failures print one line with a stable code and exit with a documented status
(:mod:`producers.cli.errors`). Commands that run the worker, the evaluation toolkit or
the review desk import their packages only when they run (``eval`` hands its arguments
to the toolkit's own command line), so ``captionq --help`` and
every producer-side command load no torch and no ``worker`` module.
"""

from __future__ import annotations

import typer

from producers.cli import bench, jobs, ops, review, status, tenants, webhooks
from producers.cli.errors import fail, run
from producers.cli.output import group
from schemas.errors import ErrorCode

app = group("captionq: images in, captions and ad copy out.")
jobs.register(app)
ops.register(app)
app.command("status")(status.status)
app.command("bench-batch")(bench.bench_batch)
app.add_typer(tenants.app, name="tenant")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(review.app, name="review")


@app.command(
    "eval",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def eval_(ctx: typer.Context) -> None:
    """Evaluate caption quality offline: captionq eval --help."""
    try:
        from evaluation.cli import app as eval_app
    except ImportError as exc:  # the evaluation extra is not installed
        fail(
            f"the evaluation toolkit is not installed ({exc.name} is missing)",
            code=ErrorCode.invalid_request,
            hint="pip install 'captionq[eval]'",
        )
    eval_app(args=ctx.args, prog_name="captionq eval")


def main() -> None:
    run(app)
