"""Insight MCP."""
