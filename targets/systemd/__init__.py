"""Templates of the systemd target: unit files and per-replica drop-ins."""
