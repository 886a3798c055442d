"""Explainability (issue 6): captum attribution maps of trained runs, cached, as jobs."""
