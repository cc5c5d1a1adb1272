"""The node: wires every layer together; CLI, HTTP API and web UI."""
