"""Forensics: capture a trace under gpucert's own load and read it — per GPU the busy share and
every idle gap with its cause, per engine step GPU time against wall time (docs/METRICS.md,
Forensics)."""
