"""One exception class per way a blob (or a model about to become one) can be wrong.

Every class derives from `FormatError`, itself a `ChipqError` (defined here, so that the format
package imports nothing from the rest of chipq; `chipq.errors` re-exports it as the root of every
chipq failure), so the CLI prints the message as one line and exits 2. Messages name the field or layer and the values seen, e.g.
``layer conv4_2: mask_bits 7 not in 1..5``. Text that came from a file (a layer name that failed
its check) is shown with `repr` so it cannot carry control characters.
"""

from __future__ import annotations


class ChipqError(Exception):
    """A failure the user can act on: bad input, a refused file, a failed check.

    The root of every chipq exception (`chipq.errors` re-exports it). The CLI turns one into a line
    on stderr and exits with its `exit_code`.
    """

    exit_code = 2  # bad input


class FormatError(ChipqError):
    """A blob that chip format v1 refuses, or a model that cannot be written as one."""


class BlobUnreadable(FormatError):
    """The blob file could not be opened or read (missing, a folder, no permission)."""


class FileTooLarge(FormatError):
    """The file is bigger than `MAX_FILE_SIZE`; refused before it is read."""


class TruncatedFile(FormatError):
    """The data ends before the header, or before the size the header announces."""


class BadMagic(FormatError):
    """The first 8 bytes are not the chipq magic: not a blob, or damaged in transfer."""


class UnsupportedVersion(FormatError):
    """The format version is not one this reader lists as readable."""


class BadHeaderField(FormatError):
    """A header field other than magic, version and CRC has a value v1 does not allow."""


class HeaderCrcMismatch(FormatError):
    """The header's CRC32 does not match header bytes 0..59."""


class FileSizeMismatch(FormatError):
    """The header's `file_size` is smaller than the data: bytes follow the announced end."""


class BadLayerCount(FormatError):
    """`layer_count` is outside 1..MAX_LAYERS."""


class TableOutOfBounds(FormatError):
    """The layer table would extend past the end of the file."""


class TableCrcMismatch(FormatError):
    """The layer table's CRC32 does not match the header's `table_crc32`."""


class UnknownLayerKind(FormatError):
    """A layer record's kind is not a v1 `LayerKind`."""


class NonZeroReserved(FormatError):
    """A reserved byte (header or layer record) is not zero."""


class BadLayerName(FormatError):
    """A layer name is empty, too long, not NUL-padded or uses characters outside [A-Za-z0-9_.-]."""


class DuplicateLayerName(FormatError):
    """Two layers share a name."""


class FieldOutOfRange(FormatError):
    """A layer field or array element is outside the range the spec gives for it."""


class ShapeMismatch(FormatError):
    """A layer's arrays do not have the shapes its channel counts imply (writer side)."""


class ChainMismatch(FormatError):
    """A layer's input channels do not follow from the previous layer (or the input buffer)."""


class MapTooSmall(FormatError):
    """A max-pool would receive a map smaller than 2x2 for the blob's input size."""


class MisalignedPayload(FormatError):
    """A payload offset is not a multiple of ALIGNMENT."""


class OverlappingPayload(FormatError):
    """A payload starts before the end of the previous region (table or payload)."""


class PayloadGapTooLong(FormatError):
    """A payload starts later than the first aligned offset after the previous region."""


class PayloadSizeMismatch(FormatError):
    """A payload size differs from the size the layer's fields imply."""


class PayloadOutOfBounds(FormatError):
    """A payload would extend past the end of the file."""


class NonZeroPadding(FormatError):
    """A padding byte between regions, or a padding bit in a packed region, is set."""


class PayloadCrcMismatch(FormatError):
    """A payload's CRC32 does not match its record."""


class TrailingData(FormatError):
    """Bytes follow the last payload (the file must end where the last payload ends)."""


class AccumulatorOverflow(FormatError):
    """A conv layer's worst-case accumulator (SPEC 4.5) exceeds the signed 32-bit range."""


class BlobWriteFailed(FormatError):
    """The file system refused to write the blob (folder missing, no permission, disk full)."""
