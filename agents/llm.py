"""The configured language model, built from settings on demand.

Nothing heavy is imported here at module level: DSPy (and through it LiteLLM) is imported only when an LM is
built, so the MCP servers and the CLI start fast. Every LM-backed component (the narrative's DSPy modules now, a
TextGrad engine later) reads the same three settings through `lm_parameters`, so they all talk to the same model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from insight_mcp.agents.settings import Settings

DEFAULT_NUM_RETRIES = 1
LM_ENGINE = "litellm"  # INSIGHT_LM is documented as a LiteLLM model string: route it through LiteLLM, always

# Key shapes providers use, removed from any text we keep, even when the provider echoes a mangled key.
_KEY_SHAPES = re.compile(
    r"(?i)(?P<bearer>bearer\s+)[^\s\"',;]+"
    r"|\b(?:sk|rk|pk)-[A-Za-z0-9_*.-]{6,}"
    r"|\bdapi[0-9a-f]{16,}\b"
    r"|(?P<field>api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"
)


class LMNotConfigured(RuntimeError):
    """Something needs an LM and none is configured; the message names the setting to set."""

    def __init__(self) -> None:
        super().__init__(
            "no language model is configured: set INSIGHT_LM to a LiteLLM model string such as "
            "openai/gpt-4o-mini (and INSIGHT_LM_API_KEY, plus INSIGHT_LM_API_BASE for a self-hosted endpoint)"
        )


@dataclass(frozen=True)
class LMParameters:
    """Everything a client needs to reach the configured model; the key stays wrapped until the call."""

    model: str
    api_base: str | None
    api_key: str | None
    timeout_seconds: float

    def __repr__(self) -> str:  # never print the key, even in a traceback's locals
        return f"LMParameters(model={self.model!r}, api_base={self.api_base!r}, timeout={self.timeout_seconds})"


def lm_configured(settings: Settings) -> bool:
    """Whether an LM is configured; without one the suite writes templated text and says nothing about it."""
    return bool(settings.lm_model and settings.lm_model.strip())


def lm_parameters(settings: Settings) -> LMParameters:
    """The configured model's connection details; raises LMNotConfigured when INSIGHT_LM is unset."""
    if not lm_configured(settings):
        raise LMNotConfigured()
    assert settings.lm_model is not None
    return LMParameters(
        model=settings.lm_model.strip(),
        api_base=settings.lm_api_base or None,
        api_key=settings.lm_api_key.get_secret_value() if settings.lm_api_key is not None else None,
        timeout_seconds=settings.lm_timeout_seconds,
    )


def build_dspy_lm(settings: Settings, *, num_retries: int = DEFAULT_NUM_RETRIES) -> Any:
    """A dspy.LM for the configured model (through LiteLLM, uncached); raises LMNotConfigured naming INSIGHT_LM."""
    params = lm_parameters(settings)
    import dspy

    kwargs: dict[str, Any] = {"timeout": params.timeout_seconds}
    if params.api_base:
        kwargs["api_base"] = params.api_base
    if params.api_key:
        kwargs["api_key"] = params.api_key
    _quiet_litellm()
    return dspy.LM(params.model, cache=False, num_retries=num_retries, engine=LM_ENGINE, **kwargs)


def _quiet_litellm() -> None:
    """LiteLLM prints help banners to stdout on every error; stdout belongs to the stdio transport."""
    import litellm

    litellm.suppress_debug_info = True


def redact(text: str, settings: Settings | None = None) -> str:
    """The text with the configured API key, bearer tokens and key-shaped strings removed; safe to log or store."""
    if settings is not None and settings.lm_api_key is not None:
        secret = settings.lm_api_key.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return _KEY_SHAPES.sub(lambda m: (m.group("bearer") or m.group("field") or "") + "***", text)
