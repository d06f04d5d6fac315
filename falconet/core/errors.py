"""Errors with stable codes.

Every failure a user can cause carries a code that never changes between releases, so scripts,
the HTTP layer and the CLI can react to it without parsing messages. The HTTP status lives here
too, so the server maps errors to responses in exactly one place.
"""
from __future__ import annotations


class FalconetError(Exception):
    """Base error: ``code`` is stable, ``message`` is for people, ``status`` is the HTTP status."""

    code = "Error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidImageError(FalconetError):
    """The bytes are not a decodable image (corrupt, truncated, not an image at all)."""

    code = "BadRequestImageFormat"
    status = 400


class ImageTooLargeError(FalconetError):
    """Pixel dimensions beyond the limit (decompression bombs included)."""

    code = "BadRequestImageDimensions"
    status = 400


class ImageTooSmallError(FalconetError):
    code = "BadRequestImageDimensions"
    status = 400


class DatasetError(FalconetError):
    """The training data as a whole cannot be used (no tags, unknown layout, ...)."""

    code = "BadRequestInvalidDataset"
    status = 400


class NotEnoughImagesError(DatasetError):
    """A tag has fewer images than training needs (Custom Vision's own minimums)."""

    code = "BadRequestNotEnoughImagesPerTag"


class ManifestError(FalconetError):
    """A model package whose manifest is missing, malformed or of an unknown schema version."""

    code = "InvalidModelPackage"
    status = 500


class PackageIntegrityError(ManifestError):
    code = "ModelPackageIntegrity"


class ExportError(FalconetError):
    code = "ExportFailed"


class ParityError(ExportError):
    """An exported file disagrees with the trained model beyond its tolerance."""

    code = "ExportParityFailed"


class BackendUnavailableError(FalconetError):
    code = "BackendUnavailable"
    status = 500
