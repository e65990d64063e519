"""Built-in tasks: problem generators with reference solutions and rule-based critics."""
