"""Lightning callbacks: stage switching, the progress bar, and retrieval metrics during training."""
