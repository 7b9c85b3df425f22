"""One package per service; each runs on its own with `python -m services.<name>.main`."""
