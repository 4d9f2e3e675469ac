"""Mapping: decoded frames to trades, through a program generated from the spec."""
