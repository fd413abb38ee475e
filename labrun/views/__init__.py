"""The read side's views: one read-only snapshot -> typed view models -> text, JSON (next HTML).

model.py   the view models (RunView, TaskView, AttemptView, EventView ...), pure
build.py   which rows a command reads from one snapshot, turned into view models
text.py    the tables and lines `status`, `runs` and `run` print
json.py    the same as JSON documents, streamed
trace.py   `report --format tsv|json`: one row per attempt (Nextflow-trace-like), streamed
"""
