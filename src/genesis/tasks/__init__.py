"""Target tasks (NCC, LCS, BMS): data preparation, fine-tuning, evaluation and metrics."""
