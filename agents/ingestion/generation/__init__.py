"""The demo-estate generator's parts; the public entry points live in ingestion.generator."""
