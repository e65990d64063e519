"""Packaged prompt templates (Jinja files); installed as ``critique_rl.prompts``."""
