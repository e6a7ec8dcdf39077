"""Gin configs; a package so `include` paths resolve from any directory."""
