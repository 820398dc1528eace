"""Caption templates for stage 1.

Textual inversion trains the placeholder token inside varied sentences so that the
learned vector means "this defect" rather than "this exact sentence". The reference
code drew from a list of about 80 photo captions; these are our own, in the same
spirit: short, neutral descriptions of a photograph with ``{}`` where the token goes.

With a *subject* (what the images show, e.g. "woven fabric"), the captions name it and
the token is only the defect on it ("a photo of woven fabric with a <hole>"). Without
one, the token has to carry the surface as well, and a small model can map it onto
another object it knows (the demo model's "hole" token painted the metal washer's
hole); stage 2 then paints with the same kind of sentence (:func:`generation_prompt`).
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

# {subject} is the user's phrase as given ("woven fabric", "a metal washer").
SUBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of {subject} with a {token}",
    "a close-up photo of {subject} with a {token}",
    "a detailed photo of {subject} with a {token}",
    "an inspection photo of {subject} with a {token}",
    "a top view of {subject} with a {token}",
    "a picture of {subject} with a {token}",
    "{subject} with a {token}",
    "a photo of a {token} on {subject}",
    "a close-up photo of a {token} on {subject}",
    "a {token} on {subject}",
)


def caption_words() -> list[str]:
    """Every word used by the templates (for building offline test vocabularies)."""
    words: set[str] = set()
    for template in CAPTION_TEMPLATES + SUBJECT_TEMPLATES:
        for word in template.format(" ", token=" ", subject=" ").replace("-", " - ").split():
            words.add(word)
    return sorted(words)


def sample_caption(token: str, rng: random.Random, subject: str = "") -> str:
    """One caption with ``token`` in it (and ``subject``, when given), drawn with ``rng``
    (seeded by the caller)."""
    if subject.strip():
        return rng.choice(SUBJECT_TEMPLATES).format(token=token, subject=subject.strip())
    return rng.choice(CAPTION_TEMPLATES).format(token)


def generation_prompt(subject: str) -> str | None:
    """Stage 2's prompt for a token learned with ``subject`` ("{}" marks the token), the
    first caption of stage 1; None without a subject (the token alone, the paper's)."""
    if not subject.strip():
        return None
    return SUBJECT_TEMPLATES[0].format(token="{}", subject=subject.strip())
