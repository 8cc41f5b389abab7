"""Thin typer commands: each parses options and calls one library function."""
