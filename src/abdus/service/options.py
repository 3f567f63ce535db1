"""The options of ``abdus serve``, typed and checked once (``ServeOptions.checked``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from abdus.choices import check_backend_option
from abdus.errors import AbdusInputError
from abdus.service.forwarder import Destination


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (only these may go without a token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | Path) -> str:
    """The bearer token: the file's text without surrounding white space (not empty)."""
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise AbdusInputError(f"cannot read the token file: {err.strerror}", token_file) from None
    if not token or any(ch.isspace() for ch in token):
        raise AbdusInputError("the token file must hold one token without spaces", token_file)
    return token


def check_ae_title(ae_title: str, what: str = "--ae-title") -> str:
    """An AE title (PS3.5 6.2: 1-16 characters, no backslash or control characters)."""
    title = ae_title.strip()
    if not 0 < len(title) <= 16 or "\\" in title or not title.isprintable():
        raise AbdusInputError(f"{what} {ae_title!r}: an AE title has 1-16 printable characters")
    return title


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``run_serve`` takes besides the model and the spool (see its doc)."""

    ae_title: str = "ABDUS"
    dicom_port: int = 11112
    allow_ae: tuple[str, ...] = ()
    forward: tuple[Destination, ...] = ()
    http_port: int = 8080
    host: str = "127.0.0.1"
    token: str | None = None  # read from --token-file
    backend: str = "auto"  # BACKEND_CHOICES; "auto" is resolved by open_predictor
    workers: int = 1
    secondary_capture: bool = False
    retries: int = 5
    retry_delay: float = 1.0  # s, the first retry; doubling
    max_upload_mb: float = 64.0
    device: str = "cpu"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    @classmethod
    def checked(
        cls,
        *,
        allow_ae: Sequence[str] = (),
        forward: Sequence[str] = (),
        token_file: str | Path | None = None,
        **values: object,
    ) -> ServeOptions:
        """The options from what the command line gives; AbdusInputError naming the bad one."""
        options = cls(
            allow_ae=tuple(check_ae_title(t, "--allow-ae") for t in allow_ae),
            forward=tuple(Destination.parse(text) for text in forward),
            **values,  # type: ignore[arg-type]
        )
        options._check(token_file)
        token = read_token(token_file) if token_file is not None else None
        return cls(
            **{**options.__dict__, "token": token, "ae_title": check_ae_title(options.ae_title)}
        )

    def _check(self, token_file: str | Path | None) -> None:
        for name, port in (("--dicom-port", self.dicom_port), ("--http-port", self.http_port)):
            if not 0 <= port <= 65535:
                raise AbdusInputError(f"{name} must be 0-65535 (0: any free port), got {port}")
        if self.workers < 1:
            raise AbdusInputError(f"--workers must be at least 1, got {self.workers}")
        if self.retries < 0:
            raise AbdusInputError(f"--retries must be 0 or more, got {self.retries}")
        if not self.retry_delay > 0:
            raise AbdusInputError(f"--retry-delay must be positive, got {self.retry_delay}")
        if not self.max_upload_mb > 0:
            raise AbdusInputError(f"--max-upload-mb must be positive, got {self.max_upload_mb}")
        check_backend_option(self.backend)
        if not is_loopback(self.host) and token_file is None:
            raise AbdusInputError(
                f"--host {self.host} is not loopback: give --token-file so requests need a token"
            )
