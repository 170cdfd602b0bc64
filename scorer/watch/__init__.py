"""The watch room: `scorer watch`, the hot-folder service (intake, batch, ledger, disposal, service loop, systemd)."""
