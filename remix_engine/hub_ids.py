"""What a Hugging Face hub id looks like: `name` or `owner/name`, never a path.

Used wherever a model name decides between the hub and the local filesystem: the API's model and
tokenizer checks, the dataset routes and the memory pre-flight's cache lookup. Torch-free.
"""

from __future__ import annotations

import re

# One or two segments of word characters, dots and dashes, each starting with a letter or digit:
# no leading "/" or ".", no "~", so a match is never an absolute, home-relative or hidden path.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_id(name: str) -> bool:
    """Whether `name` is a hub id; ".." anywhere is refused, so it cannot climb out of a cache folder."""
    return HUB_ID.fullmatch(name) is not None and ".." not in name
