"""Prompt optimization: the prompt store's operations, several optimizers behind one interface, champion and
challenger.

Nothing heavy is imported here: DSPy, TextGrad, LiteLLM and MLflow are imported inside the functions that use them,
so the optimization server starts fast.
"""
