"""Stages 1 and 2: model loading, the defect embedding learner, the box sampler.

Heavy imports (torch, diffusers) happen inside the submodules; import them directly,
e.g. ``from anogen.diffusion.models import load_model``.
"""
