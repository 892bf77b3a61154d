"""Reading a document's text: plain text, Markdown and PDF (with pypdf).

The type comes from the file name's extension, or from the declared media type of an
upload without one. Anything else is refused with an error that names the file, so a
person can tell which of their files was not taken and why.
"""

from __future__ import annotations

import io
import logging
from pathlib import PurePath

log = logging.getLogger(__name__)

PLAIN = "text/plain"
MARKDOWN = "text/markdown"
PDF = "application/pdf"

#: Media types by file extension.
EXTENSIONS = {
    ".txt": PLAIN,
    ".text": PLAIN,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".pdf": PDF,
}
SUPPORTED = "plain text (.txt), Markdown (.md) or PDF (.pdf)"


class DocumentError(ValueError):
    """A document that cannot be imported; the message names it and says why."""


class UnsupportedDocument(DocumentError):
    """A file of a type Carrier does not read."""


def content_type_for(name: str, declared: str | None = None) -> str:
    """The media type of a document called `name`: by its extension, else (an upload
    without one) by the `declared` media type. Raises `UnsupportedDocument` naming it."""
    suffix = PurePath(name).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    media = (declared or "").split(";")[0].strip().lower()
    if not suffix and media in EXTENSIONS.values():
        return media
    kind = f"{suffix} files" if suffix else "files without an extension"
    raise UnsupportedDocument(f"{name}: not imported: {kind} are not read; use {SUPPORTED}")


def extract_text(name: str, data: bytes, content_type: str) -> str:
    """The text of a document of this media type. Raises `DocumentError` naming `name`
    when it cannot be read (not UTF-8, a damaged or encrypted PDF, a PDF without text)."""
    if content_type == PDF:
        text = _pdf_text(name, data)
    elif content_type in (PLAIN, MARKDOWN):
        text = _plain_text(name, data)
    else:
        raise UnsupportedDocument(f"{name}: not imported: {content_type} is not read")
    if not text.strip():
        what = "no text layer (a scan?)" if content_type == PDF else "nothing but white space"
        raise DocumentError(f"{name}: not imported: it has {what}")
    return text


def _plain_text(name: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{name}: not imported: not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    if "\x00" in text:
        raise DocumentError(f"{name}: not imported: it holds NUL characters (a binary file?)")
    return text


def _pdf_text(name: str, data: bytes) -> str:
    from pypdf import PdfReader  # imported when a PDF comes: most runs never read one

    if not data.startswith(b"%PDF-"):
        raise DocumentError(f"{name}: not imported: not a PDF file (it lacks the %PDF- header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{name}: not imported: the PDF is encrypted with a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many kinds of errors on damaged files
        log.info("pypdf could not read %s", name, exc_info=True)
        raise DocumentError(f"{name}: not imported: the PDF cannot be read ({exc})") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    # What Postgres cannot store: NUL characters and unpaired surrogates, which text drawn
    # from a PDF's fonts may hold.
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
