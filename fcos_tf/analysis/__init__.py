"""Dataset analysis: what a recipe's target assignment does to a dataset (paper Sec. 4.1.1)."""
