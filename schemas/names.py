"""Task and queue names: the wire contract between producers and workers.

Stable constants, never generated from module paths: renaming a function must
not orphan the messages already queued under the old name.
"""

from typing import Final

TASK_CAPTION: Final = "captionq.caption"
TASK_DELIVER: Final = "captionq.deliver"
# An image URL fetched by a fetch worker into the blob store, before any GPU worker sees it.
TASK_FETCH: Final = "captionq.fetch"
# Beat's periodic tasks (worker side only; producers never send them).
TASK_REAP: Final = "captionq.reap"
TASK_DISPATCH: Final = "captionq.dispatch"
TASK_PURGE: Final = "captionq.purge"

QUEUE_GPU: Final = "captionq.gpu"
QUEUE_IO: Final = "captionq.io"  # callbacks, and beat's ticks
# Image fetches on a queue of their own, so that slow image servers hold fetch threads
# only, never the threads that send callbacks.
QUEUE_FETCH: Final = "captionq.fetch"

# Celery priorities on Redis: 0 is served first. Jobs ask for 0 (low) .. 9
# (urgent); the producer maps that onto Celery's inverted scale.
PRIORITY_MIN: Final = 0
PRIORITY_MAX: Final = 9
PRIORITY_DEFAULT: Final = 5


def celery_priority(job_priority: int) -> int:
    """Map a job priority (9 = most urgent) onto Celery-on-Redis (0 = first)."""
    return PRIORITY_MAX - job_priority


def job_priority(celery_priority: int | None) -> int:
    """The job priority that a message published at ``celery_priority`` asked for
    (a message that kept none: the default)."""
    if celery_priority is None:
        return PRIORITY_DEFAULT
    return min(PRIORITY_MAX, max(PRIORITY_MIN, PRIORITY_MAX - celery_priority))
