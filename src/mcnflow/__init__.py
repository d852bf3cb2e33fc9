"""mcnflow: HowTo100M -> MCN pre-training -> retrieval and localization results."""

__version__ = "0.1.0"
