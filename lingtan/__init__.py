"""The shell: CLI, config loading, demo."""
