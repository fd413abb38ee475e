"""The read side's views: one read-only snapshot -> typed view models -> text, JSON, HTML.

model.py   the view models (RunView, TaskView, AttemptView, EventView ...), pure
build.py   which rows a command reads from one snapshot, turned into view models
text.py    the tables and lines `status`, `runs` and `run` print
json.py    the same as JSON documents, streamed
trace.py   `report --format tsv|json`: one row per attempt (Nextflow-trace-like), streamed
digest.py  what the HTML report keeps of a run in one pass: bounded, every failed task kept
svg.py     the report's charts as inline SVG: timeline per node, peak against limit
html.py    the report as one self-contained HTML file, everything escaped
"""
