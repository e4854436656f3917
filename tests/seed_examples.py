"""The documented query and passages the tests rank, written out once.

- ``QUERY`` with ``HOPPER``, ``A100`` and ``H100`` (together
  ``NVIDIA_RERANK_PASSAGES``, in that order): the LangChain ``NVIDIARerank``
  docstring example, /work/shared/seeds/000_5ba76bef26514d9f.txt. The scraped
  curly apostrophe in "world's" is written as a plain one; the em dash and the
  trade mark sign are kept. The hosted NIM ranks ``H100`` first and ``A100``
  last ("Most relevant" / "Least relevant" in that seed).
- ``LITELLM_DOCUMENTS``: the LiteLLM "Nvidia NIM - Rerank" page's example,
  /work/shared/seeds/001_1aeed94a6e27bcdf.txt: the same query with shortened
  passages, in the same order.

The cassettes in ``cassettes/`` were written from these examples, so a replayed
request matches only if it carries exactly these texts. Tuples, so that no test
can change what another one sends.
"""

from __future__ import annotations

QUERY = "What is the GPU memory bandwidth of H100 SXM?"

HOPPER = (
    "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
    "interconnect, delivering 900GB/s of bandwidth, 7X faster than PCIe Gen5. This innovative "
    "design will deliver up to 30X higher aggregate system memory bandwidth to the GPU compared "
    "to today's fastest servers and up to 10X higher performance for applications running "
    "terabytes of data."
)
A100 = (
    "A100 provides up to 20X higher performance over the prior generation and can be "
    "partitioned into seven GPU instances to dynamically adjust to shifting demands. The A100 "
    "80GB debuts the world's fastest memory bandwidth at over 2 terabytes per second (TB/s) to "
    "run the largest models and datasets."
)
H100 = (
    "Accelerated servers with H100 deliver the compute power\u2014along with 3 terabytes per "
    "second (TB/s) of memory bandwidth per GPU and scalability with NVLink and NVSwitch\u2122."
)
NVIDIA_RERANK_PASSAGES = (HOPPER, A100, H100)

LITELLM_DOCUMENTS = (
    "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
    "interconnect, delivering 900GB/s of bandwidth.",
    "A100 provides up to 20X higher performance over the prior generation.",
    "Accelerated servers with H100 deliver 3 terabytes per second (TB/s) of memory bandwidth "
    "per GPU.",
)
