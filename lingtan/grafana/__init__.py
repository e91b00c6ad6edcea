"""Grafana for lingtan: dashboards as code (InfluxQL), and pushing them to a Grafana.

A package of the CLI rather than a script under deploy/: `lingtan grafana push -c site.yaml`
builds the dashboards for a plant's layout at push time, and the compose stack does the same
at start, so the generator must be importable wherever lingtan is installed.
"""
