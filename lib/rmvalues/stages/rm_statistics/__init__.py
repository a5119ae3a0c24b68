"""(being converted)"""

from .params import Params

__all__ = ["Params"]
