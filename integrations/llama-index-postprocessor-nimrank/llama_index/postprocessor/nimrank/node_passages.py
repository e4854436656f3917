"""What NIMRerank sends for a node: its text, or a ``nimrank.Passage`` with its image.

LlamaIndex holds images two ways: ``ImageNode`` (``image`` as base64,
``image_path``, ``image_url``, ``image_mimetype``) and, since 0.12, the
``image_resource`` (a ``MediaResource``: base64 ``data``, ``path``, ``url``,
``mimetype``) of ``Node`` and ``Document``/``ImageDocument``. NVIDIA's VLM
reranker takes an image as a base64 data URL, so a node's image goes inline,
with the node's text when it has some. A remote image URL is refused rather
than fetched: the adapter makes no requests of its own.
"""

from __future__ import annotations

import base64
from pathlib import Path

from llama_index.core.schema import BaseNode, ImageNode, MetadataMode

from nimrank import Passage

__all__ = ["node_passage"]


def node_passage(node: BaseNode, metadata_mode: MetadataMode) -> str | Passage:
    """The text of ``node`` as ranked (``metadata_mode`` decides its metadata), with its image."""
    text = node.get_content(metadata_mode=metadata_mode)
    kind = type(node)
    holds_images = _HOLDS_IMAGES.get(kind)
    if holds_images is None:
        holds_images = _HOLDS_IMAGES[kind] = issubclass(kind, ImageNode) or (
            "image_resource" in kind.model_fields
        )
    if not holds_images:
        return text
    image = _image_of(node)
    if image is None:
        return text
    return Passage(text=text if text.strip() else None, image=image)


#: Per node class: can it hold an image? (Asked once per class: isinstance on
#: pydantic models, run for every node of every call, costs more than the rest.)
_HOLDS_IMAGES: dict[type[BaseNode], bool] = {}


def _image_of(node: BaseNode) -> str | None:
    """The node's image as a data URL, or None for a node without one."""
    if isinstance(node, ImageNode):
        return _data_url(node, node.image, node.image_path, node.image_url, node.image_mimetype)
    resource = getattr(node, "image_resource", None)
    if resource is None:
        return None
    data = resource.data.decode("ascii") if resource.data else None
    url = str(resource.url) if resource.url else None
    return _data_url(node, data, resource.path, url, resource.mimetype)


def _data_url(
    node: BaseNode,
    data: str | None,
    path: str | Path | None,
    url: str | None,
    mimetype: str | None,
) -> str | None:
    if data:
        if data.startswith("data:"):  # already a data URL
            return data
        return f"data:{mimetype or _guess_mimetype(node, data)};base64,{data}"
    if path:
        payload = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        return f"data:{mimetype or _guess_mimetype(node, payload)};base64,{payload}"
    if url:
        if url.startswith("data:"):
            return url
        raise ValueError(
            f"node {node.node_id!r} has its image at {url[:80]!r}: the ranking service takes "
            "images inline, so load it first (ImageNode(image=<base64>) or image_path=...)"
        )
    return None


def _guess_mimetype(node: BaseNode, payload: str) -> str:
    import filetype  # type: ignore[import-untyped]  # a llama-index-core dependency

    kind = filetype.guess(base64.b64decode(payload[:64]))
    if kind is None or not kind.mime.startswith("image/"):
        raise ValueError(
            f"node {node.node_id!r}: cannot tell what kind of image it holds; "
            "set its image_mimetype (e.g. 'image/png')"
        )
    return str(kind.mime)
