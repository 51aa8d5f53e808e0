"""The strongroom CLI and the composition root that assembles a running node."""
