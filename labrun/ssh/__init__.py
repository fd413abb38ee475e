"""Lab nodes over SSH: transport (OpenSSH), the remote agent, sessions, node checks and reports."""
