"""What several agents share: timestamps, and (as they arrive) errors, windows and the state store."""
