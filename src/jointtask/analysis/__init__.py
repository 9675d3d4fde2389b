"""Analysis: learning transitions, joint-benefit ratios, embedding structure, ablations."""
