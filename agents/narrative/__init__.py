"""LM-written parts of a report, as DSPy modules whose instructions come from the prompt registry."""
