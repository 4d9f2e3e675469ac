"""bitty: collect live trades from cryptocurrency exchanges over websockets, reliably."""

from bitty.engine.consumer import BaseConsumer
from bitty.errors import BittyError, ExchangeError, SpecError
from bitty.spec.hooks import Hooks
from bitty.spec.load import Spec, load_spec
from bitty.trade import Trade

__all__ = ["BaseConsumer", "BittyError", "ExchangeError", "Hooks", "Spec", "SpecError", "Trade", "load_spec"]
__version__ = "0.1.0"
