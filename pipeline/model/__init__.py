"""The thesis deraining model: network, losses, training, evaluation and the inference core."""
from . import ecnet_arch, temporal_arch  # noqa: F401  (registers the networks for build_network)
