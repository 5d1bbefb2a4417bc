"""tunegate's advisor: should we fine-tune for this task, or is prompting enough?"""

__version__ = "0.1.0"
