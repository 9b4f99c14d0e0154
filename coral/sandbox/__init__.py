"""Running untrusted candidate code: the box, the harness shipped into it, and the objectives."""
