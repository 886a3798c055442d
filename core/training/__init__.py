"""Training and evaluation of classifiers on real, synthetic and mixed image sets (issue 5)."""
