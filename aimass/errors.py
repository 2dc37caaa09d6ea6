"""The domain errors users see. Each message says what was wrong and how to fix it.

The CLI prints an `AimassError` as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class AimassError(Exception):
    """Base class for errors caused by input, configuration or environment, not by a bug in aimass."""


class ConfigError(AimassError):
    """The configuration (profile, --set override, config JSON) is invalid."""


class DataImportError(AimassError):
    """A source file of the data set is missing, truncated or not what it claims to be."""


class DataVersionError(AimassError):
    """The data in the workspace is not the version that data.dvc pins, or DVC cannot provide it."""


class DataValidationError(AimassError):
    """The data set failed its Great Expectations suite."""


class ArtifactIntegrityError(AimassError):
    """An artifact's bytes do not match the sha256 recorded when it was written."""


class GateRejectedError(AimassError):
    """The evaluation gate rejected the candidate model."""


class CanaryError(AimassError):
    """A canary was refused or cannot go on: bad steps, unknown version, another canary running."""


class DeployError(AimassError):
    """The released model failed its smoke test (the release was rolled back), or its canary was not promoted."""


class EndpointError(AimassError):
    """A model server did not answer as the Open Inference Protocol says: an error status, or not ready in time."""
