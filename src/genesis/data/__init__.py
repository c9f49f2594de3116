"""Public datasets: where they live (``sources``), checksummed downloads (``fetch``) and
safe archive extraction (``archive``)."""
