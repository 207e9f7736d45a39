"""Import every built-in backend so it registers itself; a new backend adds one line here."""

from secure_agg import (
    ckks,  # noqa: F401
    crypten_mpc,  # noqa: F401
    plaintext,  # noqa: F401
    secaggplus,  # noqa: F401
)
