"""The watch room: `scorer watch`, the hot-folder service (intake, batch, disposal, service loop, systemd)."""
