"""Backends: the kinds of node labrun runs attempts on, behind one registry.

`base.py` holds the seam (`Backend`, `NodeControl`, `Connection`, `NodeRow`);
`local.py` this machine (process, cgroup, docker); `ssh.py` machines reached over SSH;
`registry.py` the one list of them and what goes through all of them; `view.py` the
`labrun nodes` table.
"""
