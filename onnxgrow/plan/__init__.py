"""Planning: turn what the user asks for into plans checked against the analysis, before anything is rewritten."""
