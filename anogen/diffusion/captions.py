"""Caption templates for stage 1.

Textual inversion trains the placeholder token inside varied sentences so that the
learned vector means "this defect" rather than "this exact sentence". The reference
code drew from a list of about 80 photo captions; these are our own, in the same
spirit: short, neutral descriptions of a photograph with ``{}`` where the token goes.
"""

from __future__ import annotations

import random

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a close photo of a {}",
    "a close-up photo of a {}",
    "a detailed photo of a {}",
    "a sharp photo of a {}",
    "a blurry photo of a {}",
    "a dark photo of a {}",
    "a bright photo of a {}",
    "a cropped photo of a {}",
    "a good photo of a {}",
    "a clean photo of a {}",
    "a small photo of a {}",
    "a large photo of a {}",
    "a picture of a {}",
    "a picture of the {}",
    "an image of a {}",
    "an image of the {}",
    "a photo of the {}",
    "a close photo of the {}",
    "a detailed photo of the {}",
    "a photo of one {}",
    "a photo of a small {}",
    "a photo of a large {}",
    "a photo showing a {}",
    "an image showing a {}",
    "a picture showing the {}",
    "a macro photo of a {}",
    "an industrial photo of a {}",
    "an inspection photo of a {}",
    "a rendition of a {}",
    "a rendering of the {}",
    "a view of a {}",
    "a top view of a {}",
    "a photo with a {}",
    "a photo of a surface with a {}",
    "a photo of a part with a {}",
    "{}",
)


def caption_words() -> list[str]:
    """Every word used by the templates (for building offline test vocabularies)."""
    words: set[str] = set()
    for template in CAPTION_TEMPLATES:
        for word in template.replace("{}", " ").replace("-", " - ").split():
            words.add(word)
    return sorted(words)


def sample_caption(token: str, rng: random.Random) -> str:
    """One caption with ``token`` in it, drawn with ``rng`` (seeded by the caller)."""
    return rng.choice(CAPTION_TEMPLATES).format(token)
