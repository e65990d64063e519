"""Built-in YAML configs."""
