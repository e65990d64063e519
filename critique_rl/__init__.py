"""critique-rl: Critique-GRPO and a lab for policy entropy collapse."""

__version__ = "0.1.0"
