"""What failures look like in stderr: the patterns `diagnose.py` searches, kept apart so
the rules there read as rules. Each list is tried newest line first; a pattern's first
group is what it found (a variable, a command, a path), else the whole line.
"""

from __future__ import annotations

import re

_NAME = r"([A-Za-z_][A-Za-z0-9_]*)"
_Q = r"[`'\"‘’$]?"  # an optional quote around a name
_UNSET = r" (?:is )?(?:not set|unset|missing|empty)"
_NO_FILE = r": (?:No such file|Directory nonexistent)"
ENV_PATTERNS = [
    re.compile(_NAME + r": unbound variable"),  # bash set -u
    re.compile(_NAME + r": parameter (?:null or )?not set"),  # ${X:?} in bash and dash
    re.compile(r"environment variable " + _Q + _NAME + _Q + _UNSET, re.I),
    re.compile(r"\b([A-Z_][A-Z0-9_]*)" + _Q + r" (?:environment variable|env var)" + _UNSET, re.I),
    re.compile(r"missing (?:required )?environment variable:? " + _Q + _NAME, re.I),
]  # fmt: skip
PY_KEYERROR = re.compile(r"^KeyError: '" + _NAME + r"'")
COMMAND_PATTERNS = [
    # bash; not labrun's own "exited 127: command not found"
    re.compile(r"(?:^|(?<=\s))(?<!exited )([^\s:]+): command not found"),
    re.compile(r"^[^:]+: \d+: ([^\s:]+): not found"),  # dash: "sh: 1: foo: not found"
    re.compile(r"^(?:/usr/bin/)?env: " + _Q + r"([^'’:]+)" + _Q + r": No such file or directory"),
    re.compile(r"command not found: (\S+)"),  # zsh, and labrun's own launch error
]  # fmt: skip
NOT_EXECUTABLE = [re.compile(r"([^\s:]+): Permission denied")]
DISK_FULL = [re.compile(r"No space left on device|Disk quota exceeded", re.I)]
CONNECT = [
    re.compile(
        r"Connection refused|could(?: not|n't) connect|failed to connect|"
        r"Name or service not known|could not translate host name|"
        r"Temporary failure in name resolution|No route to host|Network is unreachable|"
        r"connect(?:ion)?\b.*\btimed? ?out|timed out.*\bconnect",
        re.I,
    )
]
ADDRESS = [
    re.compile(r"\"([^\"]+)\"(?: \([^)]*\))?, port (\d+)"),  # libpq: at "db" (10.0.0.5), port 5432
    re.compile(r"\b([\w.-]+) port (\d+)\b"),  # curl, ssh: "to db.lab port 5432"
    re.compile(r"(\[[0-9A-Fa-f:]+\]:\d{1,5}|\b(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+:\d{2,5})\b"),
    re.compile(r"host name \"([^\"]+)\""),  # libpq, no port
]  # fmt: skip
MISSING_PATH = [
    re.compile(r"No such file or directory: '([^']+)'"),  # Python
    re.compile(r"can't open file '([^']+)'"),  # python3 missing_script.py
    re.compile(r"cannot (?:open|create|access|stat) " + _Q + r"([^'’:]+)" + _Q + _NO_FILE),
    re.compile(r"([^\s'\"`:]+)['\"`]?: No such file or directory"),  # coreutils
]  # fmt: skip
