"""Import every built-in backend so it registers itself; a new backend adds one line here."""

from secure_agg import ckks  # noqa: F401
from secure_agg import crypten_mpc  # noqa: F401
from secure_agg import plaintext  # noqa: F401
