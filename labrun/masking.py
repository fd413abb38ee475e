"""Secret values kept out of what labrun shows: reasons, the failure line, `why`'s excerpt.

A task may print its secret (a failed login that echoes its URL, a `set -x`). The log files
stay as the task wrote them (0600, in a 0700 directory); what labrun itself shows or records
has each declared secret's value replaced by `***`:

- the runner masks an ended attempt's facts before they are recorded (the reason `status`
  shows, the events) and the headline of the line it prints;
- it keeps the last lines of the attempt's stderr, masked, beside the log
  (`stderr.excerpt`, only for jobs that declare secrets), and `why` shows those: a `why`
  run from a shell where the secret is not exported still cannot show it;
- for an attempt still running (no excerpt yet) `why` masks the values it finds in its own
  environment.

Values shorter than MIN_MASKED characters are left alone: masking "1" or "yes" would
scramble every line without hiding anything.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping

from labrun import private
from labrun.logtail import stderr_tail
from labrun.model import Facts
from labrun.paths import beside

MASK = "***"
MIN_MASKED = 4
EXCERPT = "stderr.excerpt"  # beside an attempt's stderr: its last lines, masked


class Masker:
    """Replaces each secret value (longest first, so one inside another goes whole) with MASK."""

    def __init__(self, values: Iterable[str]) -> None:
        self.values = sorted({v for v in values if len(v) >= MIN_MASKED}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.values)

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text


def masker(names: Iterable[str], environ: Mapping[str, str] | None = None) -> Masker:
    """The values of the secrets `names` (a job's `secret_names`) that `environ` holds."""
    source = os.environ if environ is None else environ
    return Masker(source[name] for name in names if name in source)


def masked_facts(facts: Facts, mask: Masker) -> Facts:
    """The facts with the executor's free text masked: they become the recorded reason."""
    if not mask or not (facts.detail or facts.start_error):
        return facts
    return dataclasses.replace(facts, detail=mask(facts.detail), start_error=mask(facts.start_error))


def excerpt_path(stderr_path: str) -> str:
    return beside(stderr_path, EXCERPT)


def keep_excerpt(stderr_path: str, mask: Masker) -> None:
    """Write the masked end of an ended attempt's stderr beside it, for `why` and the headline.
    Nothing for a job without secrets, or an empty stderr."""
    if not mask:
        return
    lines = stderr_tail(stderr_path)
    if lines:
        text = "".join(mask(line) + "\n" for line in lines)
        private.write_atomic(excerpt_path(stderr_path), text.encode())


def shown_tail(stderr_path: str, mask: Masker) -> list[str]:
    """The stderr lines to show: the masked excerpt the runner kept, else the log's own end
    (an attempt still running, or a job without secrets), masked with what `mask` knows."""
    excerpt = excerpt_path(stderr_path)
    lines = stderr_tail(excerpt if os.path.exists(excerpt) else stderr_path)
    return [mask(line) for line in lines] if mask else lines
