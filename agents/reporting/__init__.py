"""The reporting agent: reports in Markdown, JSON and HTML, and alerts with their durable outbox."""
