"""Services on top of the predictor: ``serve`` (a DICOM node and REST API that scanners and
PACS send to; ``abdus serve``)."""
