"""The ``captionq`` command line: the one entry point, a sub-command per job to do.

Expected failures print one line with a stable code and exit with a documented status
(:mod:`producers.cli.errors`). Commands that run the worker, the evaluation toolkit or
the review desk import their packages only when they run, so ``captionq --help`` and
every producer-side command load no torch and no ``worker`` module.
"""

from __future__ import annotations

from producers.cli import jobs, ops, tenants, webhooks
from producers.cli.errors import run
from producers.cli.output import group

app = group("captionq: images in, captions and ad copy out.")
jobs.register(app)
ops.register(app)
app.add_typer(tenants.app, name="tenant")
app.add_typer(webhooks.app, name="webhooks")


def _mount_eval() -> None:
    try:
        from evaluation.cli import app as eval_app
    except ImportError:  # the evaluation extra is not installed
        return
    app.add_typer(eval_app, name="eval", help="Evaluate caption quality offline.")


def main() -> None:
    _mount_eval()
    run(app)
