"""Reading job files and the lab configuration into typed, frozen specs.

`locate` finds where keys are in the TOML text, `schema` declares every key once (its
type, default and help, which also give the JSON Schema), `job` and `lab` build the specs.
"""
