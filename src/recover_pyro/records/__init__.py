"""What a run leaves behind: files written atomically, plots, and result manifests."""
