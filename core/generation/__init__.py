"""Synthetic images from text-to-image diffusion models: presets, prompts, seeds, jobs."""
