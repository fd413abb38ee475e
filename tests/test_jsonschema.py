"""`labrun schema` is a JSON Schema editors can use: it accepts every example, rejects mistakes."""

from __future__ import annotations

import sys

import jsonschema
import pytest
from helpers import REPO

from labrun.config.jsonschema import json_schema

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLES = sorted((REPO / "examples").glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_valid(example: object) -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema())
    with open(example, "rb") as handle:  # type: ignore[call-overload]
        jsonschema.validate(tomllib.load(handle), json_schema())


@pytest.mark.parametrize(
    "bad",
    [
        '[job]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = "true"\nmemroy = "1GiB"\n',
        '[job]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = "true"\nmemory = "lots"\n',
        '[job]\nname = "x y"\n[[tasks]]\nname = "t"\ncommand = "true"\n',
        '[job]\nname = "x"\n[[tasks]]\nname = "t"\ncommand = "true"\nruntime = "vm"\n',
    ],
    ids=["unknown-key", "bad-size", "bad-name", "bad-runtime"],
)
def test_mistakes_are_rejected(bad: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tomllib.loads(bad), json_schema())
