"""Parses a scrape of /metrics (stdin) with the official Prometheus client's
OpenMetrics parser, which refuses anything the format does not allow, and
prints what it read as JSON: {family: {"type": ..., "samples": [[name,
labels, value], ...]}}."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
json.dump(families, sys.stdout)
