"""Network Analysis Agent: IP intelligence, egress and ingress, volume and bottleneck insights."""

from pathlib import Path

RULES_DIR = Path(__file__).parent / "rules"
