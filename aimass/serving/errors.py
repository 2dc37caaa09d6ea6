"""Errors of the model server that a user can act on."""
from aimass.errors import AimassError


class ServingError(AimassError):
    """The server cannot start as configured (no token in the token file, a port in use, ...)."""
