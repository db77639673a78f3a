"""Jinja2 templates of the artifacts, one folder per target, shipped as package data (hxpc.templates)."""
