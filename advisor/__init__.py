"""tunegate's advisor: should we fine-tune for this task, or is prompting enough?

The Python API: `from advisor import advise; result = advise("data.jsonl")` (advisor/advise.py, a callable
module; the result type is advisor/api.py's `AdviseResult`). Nothing heavy is imported here, so
`tunegate --help` stays instant.
"""

from advisor.version import __version__

__all__ = ["__version__"]
