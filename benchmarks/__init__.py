"""Runners, latency and accuracy measurement, reports."""
