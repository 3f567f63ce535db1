"""The DICOM node of ``abdus serve``: a C-ECHO and C-STORE SCP (pynetdicom) with durable intake.

Accepted at association negotiation (docs/conformance.md): the image SOP classes abdus reads
(``ACCEPTED_SOP_CLASSES``) in the transfer syntaxes its reader decodes here
(``accepted_transfer_syntaxes``), and Verification. Any other presentation context is rejected;
with an allow-list, an unknown calling AE title gets A-ASSOCIATE-RJ (reason 3, calling AE title
not recognised).

A C-STORE answers success only once the instance is durable in ``incoming/`` (temporary
file, fsync, header check, rename, fsync of the folder); a dataset that abdus cannot read gets
0xC000 (cannot understand), a write failure 0xA700 (out of resources), each with a log line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom import uid as uids
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from abdus.errors import AbdusInputError
from abdus.io.dicom import ULTRASOUND_SOP_CLASSES, read_dicom_header
from abdus.service.events import EventLog
from abdus.service.metrics import ServeMetrics
from abdus.service.spool import Spool, fsync_dir, is_uid

# PS3.4 B.5: ultrasound (with the retired UIDs abdus reads) and Secondary Capture, single and
# multi-frame grey byte / grey word / true colour (the single-bit class is not read: 1 bit).
ACCEPTED_SOP_CLASSES: tuple[str, ...] = (
    *ULTRASOUND_SOP_CLASSES,
    uids.SecondaryCaptureImageStorage,
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
)
CANDIDATE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uids.ExplicitVRLittleEndian,
    uids.ImplicitVRLittleEndian,
    uids.DeflatedExplicitVRLittleEndian,
    uids.ExplicitVRBigEndian,
    uids.JPEGBaseline8Bit,
    uids.JPEGExtended12Bit,
    uids.JPEGLossless,
    uids.JPEGLosslessSV1,
    uids.JPEGLSLossless,
    uids.JPEGLSNearLossless,
    uids.JPEG2000Lossless,
    uids.JPEG2000,
    uids.RLELossless,
)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


def accepted_transfer_syntaxes() -> list[str]:
    """The candidate syntaxes whose pixel decoder is installed (what ``abdus predict`` reads)."""
    usable = []
    for uid in CANDIDATE_TRANSFER_SYNTAXES:
        try:
            if get_decoder(UID(uid)).is_available:
                usable.append(uid)
        except NotImplementedError:
            continue
    return usable


def unreadable_reason(path: Path) -> str | None:
    """Why the spooled file ``path`` cannot be processed, or None: the header checks of
    ``abdus.io.dicom``, a valid StudyInstanceUID, and for native pixel data its full length."""
    try:
        header = read_dicom_header(path)
    except AbdusInputError as err:
        return str(err).removeprefix(f"{path}: ")
    ds = header.dataset
    if not is_uid(str(ds.get("StudyInstanceUID", "")).strip()):
        return "no valid StudyInstanceUID"
    if not header.syntax.is_compressed:
        expected = get_expected_length(ds, "bytes")
        try:  # a deferred value: read from the file now
            stored = len(ds.PixelData)
        except Exception as err:  # pydicom raises many types on a cut file
            return f"cannot read the pixel data (truncated?): {err}"
        if stored < expected:
            return f"pixel data truncated: {stored} bytes of {expected}"
    return None


def _status(code: int, comment: str = "") -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]
    return status


class DicomNode:
    """The SCP: ``start`` listens (non-blocking), ``stop`` closes; ``on_stored`` gets each
    spooled file."""

    def __init__(
        self,
        spool: Spool,
        log: EventLog,
        metrics: ServeMetrics,
        on_stored: Callable[[Path], None],
        *,
        ae_title: str,
        allowed_calling_aets: Sequence[str] = (),
    ) -> None:
        self.spool, self.log, self.metrics, self.on_stored = spool, log, metrics, on_stored
        self.ae = AE(ae_title=ae_title)
        self.ae.require_calling_aet = list(allowed_calling_aets)
        syntaxes = accepted_transfer_syntaxes()
        self.transfer_syntaxes = syntaxes
        for sop_class in ACCEPTED_SOP_CLASSES:
            self.ae.add_supported_context(sop_class, syntaxes)
        self.ae.add_supported_context(
            Verification, [uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian]
        )
        self.server: ThreadedAssociationServer | None = None

    def start(self, host: str, port: int) -> int:
        """Listen on ``host``:``port`` (0: a free port); returns the port."""
        handlers = [
            (evt.EVT_C_ECHO, lambda event: STATUS_SUCCESS),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_association, ["accepted"]),
            (evt.EVT_REJECTED, self._on_association, ["rejected"]),
            (evt.EVT_ABORTED, self._on_association, ["aborted"]),
            (evt.EVT_RELEASED, self._on_association, ["released"]),
        ]
        try:
            self.server = self.ae.start_server((host, port), block=False, evt_handlers=handlers)
        except OSError as err:
            raise AbdusInputError(f"cannot listen on {host}:{port}: {err.strerror}") from None
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop accepting associations and close the open ones."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_association(self, event: Any, what: str) -> None:
        requestor = event.assoc.requestor
        self.log(
            "association",
            state=what,
            calling_ae_title=str(requestor.ae_title).strip(),
            address=f"{requestor.address}:{requestor.port}",
            accepted_contexts=len(event.assoc.accepted_contexts) if what == "accepted" else None,
        )

    def _on_store(self, event: Any) -> Dataset | int:
        uid = str(event.request.AffectedSOPInstanceUID or "").strip()
        calling = str(event.assoc.requestor.ae_title).strip()
        if not is_uid(uid):
            return self._reject(
                STATUS_CANNOT_UNDERSTAND, f"invalid SOP Instance UID {uid!r}", uid, calling
            )
        target = self.spool.incoming_file(uid)
        try:
            data = event.encoded_dataset()
            fd, name = tempfile.mkstemp(prefix=f".{uid}.", suffix=".tmp", dir=target.parent)
        except OSError as err:
            return self._reject(STATUS_OUT_OF_RESOURCES, f"cannot spool: {err}", uid, calling)
        except Exception as err:  # pynetdicom could not encode what it received
            return self._reject(STATUS_CANNOT_UNDERSTAND, f"cannot read: {err}", uid, calling)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                reason = unreadable_reason(tmp)
            except Exception as err:  # a reader bug must not look like success or crash
                reason = f"cannot check the dataset: {type(err).__name__}: {err}"
            if reason is None:
                os.replace(tmp, target)
                fsync_dir(target.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            return self._reject(STATUS_OUT_OF_RESOURCES, f"cannot spool: {err}", uid, calling)
        if reason is not None:
            tmp.unlink(missing_ok=True)
            return self._reject(STATUS_CANNOT_UNDERSTAND, reason, uid, calling)
        self.metrics.received.inc()
        self.log(
            "received",
            sop_instance_uid=uid,
            sop_class_uid=str(event.request.AffectedSOPClassUID),
            transfer_syntax=str(event.context.transfer_syntax),
            calling_ae_title=calling,
            bytes=len(data),
            duplicate=self.spool.done_marker(uid).exists(),
        )
        self.on_stored(target)
        return STATUS_SUCCESS

    def _reject(self, code: int, reason: str, uid: str, calling: str) -> Dataset:
        self.metrics.rejected.inc()
        self.log(
            "error",
            stage="c-store",
            status=f"0x{code:04X}",
            sop_instance_uid=uid,
            calling_ae_title=calling,
            message=reason,
        )
        return _status(code, reason)
