"""LM-written parts of a report, as DSPy modules whose instructions come from the prompt registry.

Importing this package stays light: DSPy, LiteLLM and MLflow are imported only when an LM is actually used.
"""

from insight_mcp.agents.narrative.templated import templated_narrative
from insight_mcp.agents.narrative.writer import write_narrative

__all__ = ["templated_narrative", "write_narrative"]
