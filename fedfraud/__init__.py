"""fedfraud: federated fraud detection across banks, with secure aggregation and DP."""

import warnings

__version__ = "0.1.0"

# torch_geometric 2.8 calls torch.jit.script while it is imported, which torch 2.13 announces
# as deprecated on every GNN run. It is PyG's own import-time call, not ours to change; hide
# exactly that message, as torch.jit issues it (any other warning still shows).
warnings.filterwarnings(
    "ignore",
    message=r"`torch\.jit\.script` is deprecated",
    category=DeprecationWarning,
    module=r"torch\.jit\._script$",
)
