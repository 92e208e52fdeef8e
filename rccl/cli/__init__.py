"""Console entry points (see [project.scripts] in pyproject.toml): one module per command."""
