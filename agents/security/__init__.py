"""Cyber Security Agent: the detection engine and its rule files."""
