/*
 * chipq_ref.c - a self-contained C99 reference executor of chipq chip format v1 and v2.
 *
 *     chipq_ref BLOB PIXELS.u8 OUTDIR     run one image, write every layer's output map
 *     chipq_ref --check BLOB...           only read and check blobs (several: one line each)
 *
 * It implements formats/SPEC.md (shipped beside this file): the reader obligations of section 5,
 * in the order that section lists, and the integer arithmetic of section 4. PIXELS.u8 is the raw
 * uint8 input buffer, C-order (C, H, W), H x W the blob's input size and the planes in its channel
 * order. A v2 conv layer may store narrower alpha codes (SPEC 3.4: the chip multiplies by
 * code << (8 - alpha_bits)) and a kernel presence bitmap (SPEC 3.5: only present kernels are stored,
 * an absent kernel weighs zero and the conv loop skips it). For every layer l the uint8 output map, C-order (C, H, W), is written to
 * OUTDIR/<l:02d>_<name>.u8 (OUTDIR is created when missing, not its parents; each file appears by a
 * rename, so none is ever half-written under its name).
 *
 * The blob is hostile input. The file is read whole once its size passed the 2 GiB cap of SPEC 2;
 * every check runs before anything a field could size is allocated; sizes and offsets are 64-bit
 * and checked before use; nothing is read outside the file. Any failure
 * prints one line, "chipq_ref: <ErrorType>: <message>", on stderr and exits with status 2; the
 * error types are those of chipq's Python reader (chipq.formats.errors). Exit status 0: done.
 *
 * The arithmetic: the accumulator is int32_t. The reader proves the bound of SPEC 4.5 for every
 * layer before anything runs, so no partial sum can overflow whatever the order of the additions.
 * Right shifts of negative values are never used (they are implementation-defined in C): a negative
 * rounded accumulator is a 0 output whatever its shift, since floor(v / 2^s) < 0 for v < 0.
 *
 * Only the C99 library is needed, plus mkdir (POSIX, or _mkdir on Windows) to create OUTDIR.
 */
#if defined(_WIN32)
#include <direct.h>
#define CHIPQ_MKDIR(path) _mkdir(path)
#else
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <sys/types.h>
#define CHIPQ_MKDIR(path) mkdir((path), 0777)
#endif

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- SPEC constants (formats/constants.py) ----------------------------------------------------- */

#define HEADER_SIZE 64u
#define RECORD_SIZE 48u
#define ALIGNMENT 8u
#define HEADER_CRC_SPAN 60u
#define NAME_SIZE 16u
#define MAX_LAYERS 64u
#define MAX_CHANNELS 4096u
#define MAX_INPUT_SIDE 4096u
#define MAX_FILE_SIZE ((uint64_t)1 << 31)
#define INPUT_CHANNELS 3u
#define KERNEL_TAPS 9u
#define MIN_MASK_BITS 1u
#define MAX_MASK_BITS 5u
#define ALPHA_BITS 8u     /* the width of the alpha the chip multiplies by, and v1's stored width */
#define MIN_ALPHA_BITS 1u /* v2: a conv may store 1..8-bit alpha codes */
#define KNOWN_LAYER_FLAGS 1u
#define FLAG_KERNEL_PRESENCE 1u
#define FORMAT_V1 1u
#define FORMAT_V2 2u
#define WEIGHT_SHIFT_MAX 15u
#define BIAS_SHIFT_MAX 31u
#define OUT_SHIFT_MAX 31u
#define BIAS_BITS 12u
#define ACC_MAX 2147483647LL
#define ACT_MAX 255
#define KIND_CONV 1u
#define KIND_POOL 2u
#define EXIT_BAD 2

static const unsigned char MAGIC[8] = {0x89, 'C', 'H', 'I', 'P', 'Q', '\r', '\n'};

/* ---- failure: one line, exit 2 ------------------------------------------------------------------ */

/* Everything allocated hangs off this struct, so memory is still reachable when fail() exits. */
static struct {
    unsigned char *blob;
    unsigned char *pixels;
    unsigned char *map;     /* the current layer's output, uint8 (C, H, W) */
    unsigned char *next;    /* the next layer's output */
    int16_t *padded;        /* the conv input with a one-element zero border, int16 */
    int32_t *acc;           /* one output plane of accumulators */
    int32_t *weights;       /* alpha * M of one output channel, (I, 3, 3) */
    FILE *file;             /* the blob while it is being read */
    const char *checking;   /* --check with several blobs: the one being read, else NULL */
    jmp_buf next_blob;      /* where fail() returns to then */
} G;

/* Print "chipq_ref: <type>: <message>" on stderr and exit 2; when checking several blobs, print
 * "<blob>: <type>: <message>" on stdout and go on with the next blob instead. */
static void fail(const char *type, const char *format, ...)
{
    va_list args;
    FILE *out = G.checking != NULL ? stdout : stderr;
    fprintf(out, "%s: %s: ", G.checking != NULL ? G.checking : "chipq_ref", type);
    va_start(args, format);
    vfprintf(out, format, args);
    va_end(args);
    fputc('\n', out);
    if (G.checking != NULL)
        longjmp(G.next_blob, 1);
    exit(EXIT_BAD);
}

/* ---- little-endian fields and CRC32 ------------------------------------------------------------- */

static unsigned rd16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint32_t crc_table[256];

static void crc_init(void)
{
    uint32_t n, k, c;
    for (n = 0; n < 256; n++) {
        c = n;
        for (k = 0; k < 8; k++)
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* ISO-HDLC CRC-32, as zlib's crc32 (SPEC 1). */
static uint32_t crc32_of(const unsigned char *p, uint64_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    uint64_t i;
    for (i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- the model: checked records, arrays left in the blob and decoded on use --------------------- */

typedef struct {
    unsigned kind;
    char name[NAME_SIZE];
    unsigned in_channels, out_channels, mask_bits, weight_shift, bias_shift, out_shift;
    unsigned alpha_bits, flags; /* v2 record bytes 28, 29; a v1 conv has alpha_bits 8, flags 0 */
    uint64_t payload_offset;
    uint32_t payload_size;
    uint64_t stored;            /* kernels with an alpha and a mask in the payload: O*I, or the bitmap's population */
    const unsigned char *presence, *alpha, *bias, *mask; /* conv: the payload regions; presence NULL without the flag */
} Layer;

typedef struct {
    unsigned version;
    unsigned height, width, channel_order;
    unsigned mean[INPUT_CHANNELS];
    unsigned layer_count;
    Layer layers[MAX_LAYERS];
} Model;

/* Bytes of `count` fields of `width` bits (SPEC 3.2); count * width < 2^40 here, no overflow. */
static uint64_t packed_size(uint64_t count, unsigned width) { return (count * width + 7u) / 8u; }

/* Field k of a packed LSB-first stream of `width`-bit fields (1..12) in a region of `size` bytes. */
static unsigned field_at(const unsigned char *region, uint64_t size, uint64_t k, unsigned width)
{
    uint64_t bit = k * width;
    uint64_t byte = bit / 8u;
    unsigned shift = (unsigned)(bit % 8u);
    uint32_t word = region[byte];
    if (shift + width > 8u && byte + 1u < size)
        word |= (uint32_t)region[byte + 1u] << 8;
    return (unsigned)(word >> shift) & ((1u << width) - 1u);
}

static int bias_at(const Layer *l, unsigned o)
{
    unsigned raw = field_at(l->bias, packed_size(l->out_channels, BIAS_BITS), o, BIAS_BITS);
    return raw >= 2048u ? (int)raw - 4096 : (int)raw; /* 12-bit two's complement */
}

/* Whether kernel k = o*I + i is stored (SPEC 3.5): bit k of the LSB-first bitmap; always without one. */
static int kernel_present(const Layer *l, uint64_t kernel)
{
    return l->presence == NULL || (l->presence[kernel / 8u] >> (unsigned)(kernel % 8u)) & 1u;
}

/* W[o][i][t] = alpha[o][i] * M, M = 2c - (2^m - 1) (SPEC 3.3, 3.4, 4.2), for one output channel o.
 *
 * The payload stores the present kernels only, o-major: the j-th stored alpha and mask belong to the
 * j-th present kernel. `*next` is that rank j at kernel (o, 0); callers walk o = 0, 1, ... in order and
 * pass the same cursor, so no rank table is needed. An absent kernel weighs zero. The stored alpha is
 * an alpha_bits-wide code; the chip multiplies by code << (8 - alpha_bits). */
static void weights_of(const Layer *l, unsigned o, int32_t *w, uint64_t *next)
{
    uint64_t alpha_size = packed_size(l->stored, l->alpha_bits);
    uint64_t mask_size = packed_size(l->stored * KERNEL_TAPS, l->mask_bits);
    int top = (1 << l->mask_bits) - 1;
    unsigned i, t;
    for (i = 0; i < l->in_channels; i++) {
        uint64_t kernel = (uint64_t)o * l->in_channels + i, j = *next;
        int alpha;
        if (!kernel_present(l, kernel)) {
            for (t = 0; t < KERNEL_TAPS; t++)
                w[i * KERNEL_TAPS + t] = 0;
            continue;
        }
        alpha = (int)(field_at(l->alpha, alpha_size, j, l->alpha_bits) << (ALPHA_BITS - l->alpha_bits));
        for (t = 0; t < KERNEL_TAPS; t++) {
            int code = (int)field_at(l->mask, mask_size, j * KERNEL_TAPS + t, l->mask_bits);
            w[i * KERNEL_TAPS + t] = alpha * (2 * code - top);
        }
        *next = j + 1u;
    }
}

/* ---- reading the blob (SPEC 5, in order) -------------------------------------------------------- */

static unsigned char *read_blob_file(const char *path, uint64_t *size_out)
{
    long end;
    uint64_t size;
    size_t got;
    int c;
    FILE *f = G.file = fopen(path, "rb"); /* in G: closed by check_many() when a check fails */
    if (f == NULL)
        fail("BlobUnreadable", "%s: cannot read (%s)", path, strerror(errno));
    c = getc(f); /* a folder opens on some systems but cannot be read */
    if (c == EOF && ferror(f))
        fail("BlobUnreadable", "%s: cannot read (%s)", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        fail("BlobUnreadable", "%s: cannot read (cannot find its size)", path);
    size = (uint64_t)end;
    if (size > MAX_FILE_SIZE)
        fail("FileTooLarge", "%s: %llu bytes, more than the %llu a blob may have", path,
             (unsigned long long)size, (unsigned long long)MAX_FILE_SIZE);
    G.blob = (unsigned char *)malloc(size > 0 ? (size_t)size : 1u);
    if (G.blob == NULL)
        fail("OutOfMemory", "%s: cannot allocate %llu bytes to read it", path, (unsigned long long)size);
    got = fread(G.blob, 1, (size_t)size, f);
    if (got != (size_t)size || ferror(f) || getc(f) != EOF)
        fail("BlobUnreadable", "%s: cannot read (short read, or the file changed while reading)", path);
    fclose(f);
    G.file = NULL;
    *size_out = size;
    return G.blob;
}

static void hex_bytes(char *out, const unsigned char *p, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++)
        sprintf(out + 3 * i, i + 1 < n ? "%02x " : "%02x", p[i]);
    if (n == 0)
        out[0] = '\0';
}

/* A 16-byte name field, shown safely (as Python's repr shows bytes: \xNN for anything odd). */
static void show_raw_name(char *out, const unsigned char *raw)
{
    unsigned i;
    char *p = out;
    for (i = 0; i < NAME_SIZE; i++) {
        unsigned char c = raw[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
            *p++ = (char)c;
        else
            p += sprintf(p, "\\x%02x", c);
    }
    *p = '\0';
}

static int name_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static void check_name(unsigned index, const unsigned char *raw, char *name)
{
    char shown[NAME_SIZE * 4 + 1];
    unsigned len = 0, i;
    while (len < NAME_SIZE && raw[len] != 0)
        len++;
    show_raw_name(shown, raw);
    if (len == NAME_SIZE)
        fail("BadLayerName", "layer %u: name field '%s' is not 1..15 bytes followed by NUL padding", index, shown);
    for (i = len; i < NAME_SIZE; i++)
        if (raw[i] != 0)
            fail("BadLayerName", "layer %u: name field '%s' is not 1..15 bytes followed by NUL padding", index, shown);
    if (len == 0)
        fail("BadLayerName", "layer %u: name '' is not 1..15 characters from [A-Za-z0-9_.-]", index);
    for (i = 0; i < len; i++)
        if (!name_char_ok(raw[i]))
            fail("BadLayerName", "layer %u: name '%s' is not 1..15 characters from [A-Za-z0-9_.-]", index, shown);
    memcpy(name, raw, NAME_SIZE); /* NUL-terminated: raw[len] == 0 */
}

static void check_range(const char *name, const char *field, uint64_t value, uint64_t low, uint64_t high)
{
    if (value < low || value > high)
        fail("FieldOutOfRange", "layer %s: %s %llu not in %llu..%llu", name, field, (unsigned long long)value,
             (unsigned long long)low, (unsigned long long)high);
}

static void check_header(const unsigned char *b, uint64_t size, Model *m)
{
    char seen[64], want[64];
    unsigned version, i;
    uint64_t file_size;
    uint32_t crc;
    static const char *const fields[4] = {"header_size", "layer_record_size", "alignment", "flags"};
    uint64_t values[4];
    const uint64_t wanted[4] = {HEADER_SIZE, RECORD_SIZE, ALIGNMENT, 0};

    if (size < HEADER_SIZE)
        fail("TruncatedFile", "file is %llu bytes, shorter than the 64-byte header", (unsigned long long)size);
    if (memcmp(b, MAGIC, sizeof MAGIC) != 0) {
        hex_bytes(seen, b, 8);
        hex_bytes(want, MAGIC, 8);
        fail("BadMagic", "not a chipq blob: starts with %s, expected %s", seen, want);
    }
    version = rd16(b + 8);
    if (version != FORMAT_V1 && version != FORMAT_V2)
        fail("UnsupportedVersion", "format version %u not readable (this chipq_ref reads [1, 2])", version);
    m->version = version;
    values[0] = rd16(b + 10);
    values[1] = rd16(b + 12);
    values[2] = rd16(b + 14);
    values[3] = rd32(b + 20);
    for (i = 0; i < 4; i++)
        if (values[i] != wanted[i])
            fail("BadHeaderField", "header: %s %llu, v1 requires %llu", fields[i], (unsigned long long)values[i],
                 (unsigned long long)wanted[i]);
    crc = crc32_of(b, HEADER_CRC_SPAN);
    if (crc != rd32(b + 60))
        fail("HeaderCrcMismatch", "header CRC32 %08lx does not match its bytes (%08lx): header damaged",
             (unsigned long)rd32(b + 60), (unsigned long)crc);
    file_size = rd64(b + 24);
    if (file_size > size)
        fail("TruncatedFile", "header says %llu bytes, the file has %llu: truncated", (unsigned long long)file_size,
             (unsigned long long)size);
    if (file_size < size)
        fail("FileSizeMismatch", "header says %llu bytes, the file has %llu", (unsigned long long)file_size,
             (unsigned long long)size);
    if (size > MAX_FILE_SIZE)
        fail("FileTooLarge", "file is %llu bytes, more than the %llu a blob may have", (unsigned long long)size,
             (unsigned long long)MAX_FILE_SIZE);
    m->layer_count = (unsigned)rd32(b + 16);
    if (rd32(b + 16) < 1u || rd32(b + 16) > MAX_LAYERS)
        fail("BadLayerCount", "header: layer_count %lu not in 1..%u", (unsigned long)rd32(b + 16), MAX_LAYERS);
    m->height = rd16(b + 32);
    m->width = rd16(b + 34);
    if (m->height < 1u || m->height > MAX_INPUT_SIDE)
        fail("BadHeaderField", "header: input_height %u not in 1..%u", m->height, MAX_INPUT_SIDE);
    if (m->width < 1u || m->width > MAX_INPUT_SIDE)
        fail("BadHeaderField", "header: input_width %u not in 1..%u", m->width, MAX_INPUT_SIDE);
    if (b[36] != INPUT_CHANNELS)
        fail("BadHeaderField", "header: input_channels %u, v1 requires %u", (unsigned)b[36], INPUT_CHANNELS);
    m->channel_order = b[37];
    if (m->channel_order > 1u)
        fail("BadHeaderField", "header: channel_order %u not 0 (RGB) or 1 (BGR)", m->channel_order);
    for (i = 0; i < INPUT_CHANNELS; i++)
        m->mean[i] = b[38 + i]; /* u8: always within 0..255 */
    for (i = 41; i < 56; i++)
        if (b[i] != 0) {
            char shown[64];
            hex_bytes(shown, b + 41, 15);
            fail("NonZeroReserved", "header: reserved bytes %s not zero", shown);
        }
}

/* SPEC 3.1: the padding bits after `count` fields of `width` bits in a region must be zero. */
static int padding_bits_zero(const unsigned char *region, uint64_t size, uint64_t count, unsigned width)
{
    uint64_t used = count * width;
    if (used % 8u == 0 || size == 0)
        return 1;
    return (region[size - 1u] >> (unsigned)(used % 8u)) == 0;
}

/* The payload [offset, offset + size) must lie inside the file (SPEC 5). */
static void check_in_file(const Layer *l, uint64_t offset, uint64_t size, uint64_t file_size)
{
    /* offset <= 2^31 + 7 here and size < 2^32: the sum cannot wrap 64 bits */
    if (offset + size > file_size)
        fail("PayloadOutOfBounds", "layer %s: payload %llu..%llu extends past the end of the file (%llu)", l->name,
             (unsigned long long)offset, (unsigned long long)(offset + size), (unsigned long long)file_size);
}

/* Population of a presence bitmap (SPEC 3.5), after checking the payload can hold it.
 *
 * The payload lies inside the file (checked by the caller); the bitmap's size follows from the channel
 * counts, so it is checked against payload_size before a byte of it is read. Its padding bits must be
 * zero, so every set bit counted is a kernel's. */
static uint64_t present_kernels(const unsigned char *b, const Layer *l)
{
    uint64_t kernels = (uint64_t)l->out_channels * l->in_channels, bitmap_size = packed_size(kernels, 1), i, count = 0;
    const unsigned char *bitmap = b + l->payload_offset;
    if ((uint64_t)l->payload_size < bitmap_size)
        fail("PayloadSizeMismatch", "layer %s: payload_size %lu cannot hold the %llu-byte presence bitmap", l->name,
             (unsigned long)l->payload_size, (unsigned long long)bitmap_size);
    if (!padding_bits_zero(bitmap, bitmap_size, kernels, 1))
        fail("NonZeroPadding", "layer %s: padding bits in the last byte of the presence region not zero", l->name);
    for (i = 0; i < bitmap_size; i++) {
        unsigned byte = bitmap[i];
        while (byte != 0) {
            count += byte & 1u;
            byte >>= 1;
        }
    }
    return count;
}

/* SPEC 5 for one conv payload; sets its region pointers and returns the CRC32 of its bytes. */
static uint32_t check_payload(const unsigned char *b, uint64_t size, Layer *l, uint64_t region_end)
{
    uint64_t offset = l->payload_offset, packed, want, kernels, presence_size, alpha_size, bias_size, mask_size, i;
    int pruned = (l->flags & FLAG_KERNEL_PRESENCE) != 0;
    kernels = (uint64_t)l->out_channels * l->in_channels;
    if (offset % ALIGNMENT != 0)
        fail("MisalignedPayload", "layer %s: payload_offset %llu not a multiple of %u", l->name,
             (unsigned long long)offset, ALIGNMENT);
    if (offset < region_end)
        fail("OverlappingPayload", "layer %s: payload_offset %llu is inside the previous region (ends at %llu)",
             l->name, (unsigned long long)offset, (unsigned long long)region_end);
    packed = (region_end + ALIGNMENT - 1u) / ALIGNMENT * ALIGNMENT; /* region_end <= 2^31: no overflow */
    if (offset != packed)
        fail("PayloadGapTooLong",
             "layer %s: payload_offset %llu, must be %llu (the first multiple of %u at or after the end of the "
             "previous region, %llu)",
             l->name, (unsigned long long)offset, (unsigned long long)packed, ALIGNMENT,
             (unsigned long long)region_end);
    l->stored = kernels;
    presence_size = 0;
    if (pruned) { /* the size follows from the bitmap, which must lie in the file first */
        check_in_file(l, offset, l->payload_size, size);
        l->stored = present_kernels(b, l);
        presence_size = packed_size(kernels, 1);
    }
    alpha_size = packed_size(l->stored, l->alpha_bits);
    bias_size = packed_size(l->out_channels, BIAS_BITS);
    mask_size = packed_size(l->stored * KERNEL_TAPS, l->mask_bits);
    want = presence_size + alpha_size + bias_size + mask_size; /* < 2^29 for 4096 x 4096 kernels */
    if ((uint64_t)l->payload_size != want) {
        if (pruned)
            fail("PayloadSizeMismatch", "layer %s: payload_size %lu, its fields and %llu present kernels give %llu",
                 l->name, (unsigned long)l->payload_size, (unsigned long long)l->stored, (unsigned long long)want);
        fail("PayloadSizeMismatch", "layer %s: payload_size %lu, its fields give %llu", l->name,
             (unsigned long)l->payload_size, (unsigned long long)want);
    }
    check_in_file(l, offset, l->payload_size, size);
    for (i = region_end; i < offset; i++)
        if (b[i] != 0)
            fail("NonZeroPadding", "layer %s: padding bytes %llu..%llu before the payload not zero", l->name,
                 (unsigned long long)region_end, (unsigned long long)offset);
    l->presence = pruned ? b + offset : NULL;
    l->alpha = b + offset + presence_size;
    l->bias = l->alpha + alpha_size;
    l->mask = l->bias + bias_size;
    if (!padding_bits_zero(l->alpha, alpha_size, l->stored, l->alpha_bits))
        fail("NonZeroPadding", "layer %s: padding bits in the last byte of the alpha region not zero", l->name);
    if (!padding_bits_zero(l->bias, bias_size, l->out_channels, BIAS_BITS))
        fail("NonZeroPadding", "layer %s: padding bits in the last byte of the bias region not zero", l->name);
    if (!padding_bits_zero(l->mask, mask_size, l->stored * KERNEL_TAPS, l->mask_bits))
        fail("NonZeroPadding", "layer %s: padding bits in the last byte of the mask region not zero", l->name);
    return crc32_of(b + offset, l->payload_size); /* compared with the record by the caller */
}

/* X of SPEC 4.5 for the first layer: the largest |pixel - mean|. */
static int64_t first_layer_input_max(const Model *m)
{
    int64_t x = 0;
    unsigned c;
    for (c = 0; c < INPUT_CHANNELS; c++) {
        int64_t v = m->mean[c] > (unsigned)ACT_MAX - m->mean[c] ? m->mean[c] : (unsigned)ACT_MAX - m->mean[c];
        if (v > x)
            x = v;
    }
    return x;
}

/* max_o B[o] of SPEC 4.5 for one conv layer, exact in 64 bits (< 2^43). */
static int64_t conv_bound(const Layer *l, int64_t largest_in)
{
    int64_t best = 0, rounding = l->out_shift > 0 ? (int64_t)1 << (l->out_shift - 1u) : 0;
    unsigned o, i, t;
    uint64_t stored = 0; /* rank of kernel (o, 0) among the stored kernels */
    for (o = 0; o < l->out_channels; o++) {
        int64_t sum = 0, bias = bias_at(l, o), term;
        weights_of(l, o, G.weights, &stored);
        for (i = 0; i < l->in_channels; i++)
            for (t = 0; t < KERNEL_TAPS; t++) {
                int32_t w = G.weights[i * KERNEL_TAPS + t];
                sum += w < 0 ? -(int64_t)w : (int64_t)w;
            }
        term = (bias < 0 ? -bias : bias) * ((int64_t)1 << l->bias_shift) + largest_in * sum;
        if (o == 0 || term > best)
            best = term;
    }
    return best + rounding;
}

static void read_model(const char *path, Model *m)
{
    uint64_t size, region_end, table_end;
    const unsigned char *b = read_blob_file(path, &size);
    unsigned index, j, channels, height, width, first = 1, max_in = 1, reserved_from, uses_v2 = 0;

    check_header(b, size, m);
    table_end = HEADER_SIZE + (uint64_t)m->layer_count * RECORD_SIZE;
    if (table_end > size)
        fail("TableOutOfBounds", "layer table of %u records ends at byte %llu, the file at %llu", m->layer_count,
             (unsigned long long)table_end, (unsigned long long)size);
    {
        uint32_t crc = crc32_of(b + HEADER_SIZE, table_end - HEADER_SIZE);
        if (crc != rd32(b + 56))
            fail("TableCrcMismatch", "layer table CRC32 %08lx does not match the header's %08lx: table damaged",
                 (unsigned long)crc, (unsigned long)rd32(b + 56));
    }
    channels = INPUT_CHANNELS;
    height = m->height;
    width = m->width;
    region_end = table_end;
    for (index = 0; index < m->layer_count; index++) {
        const unsigned char *r = b + HEADER_SIZE + (uint64_t)index * RECORD_SIZE;
        Layer *l = &m->layers[index];
        int conv, v2_conv;
        l->kind = r[0];
        if (l->kind != KIND_CONV && l->kind != KIND_POOL)
            fail("UnknownLayerKind", "layer %u: kind %u is not one of 1 (CONV3X3_RELU), 2 (MAXPOOL2X2)", index,
                 l->kind);
        conv = l->kind == KIND_CONV;
        /* bytes 28, 29 are alpha_bits and flags in v2, reserved (zero) in v1; 30, 31 reserved in both */
        reserved_from = m->version == FORMAT_V1 ? 28u : 30u;
        if (r[1] | r[2] | r[3] | r[30] | r[31] | (m->version == FORMAT_V1 ? r[28] | r[29] : 0)) {
            char a[16], c[16];
            hex_bytes(a, r + 1, 3);
            hex_bytes(c, r + reserved_from, 32u - reserved_from);
            fail("NonZeroReserved", "layer %u: reserved bytes %s / %s not zero", index, a, c);
        }
        check_name(index, r + 4, l->name);
        for (j = 0; j < index; j++)
            if (strcmp(m->layers[j].name, l->name) == 0)
                fail("DuplicateLayerName", "layer %u: name %s already used by an earlier layer", index, l->name);
        l->in_channels = rd16(r + 20);
        l->out_channels = rd16(r + 22);
        l->mask_bits = r[24];
        l->weight_shift = r[25];
        l->bias_shift = r[26];
        l->out_shift = r[27];
        l->alpha_bits = r[28];
        l->flags = r[29];
        l->payload_offset = rd64(r + 32);
        l->payload_size = rd32(r + 40);
        /* the field ranges of SPEC 3, in the reader's order: the v2 fields first */
        v2_conv = conv && m->version == FORMAT_V2;
        check_range(l->name, "alpha_bits", l->alpha_bits, v2_conv ? MIN_ALPHA_BITS : 0, v2_conv ? ALPHA_BITS : 0);
        check_range(l->name, "flags", l->flags, 0, v2_conv ? KNOWN_LAYER_FLAGS : 0);
        if (conv && !v2_conv)
            l->alpha_bits = ALPHA_BITS; /* a v1 conv stores 8-bit alphas */
        check_range(l->name, "in_channels", l->in_channels, 1, MAX_CHANNELS);
        check_range(l->name, "out_channels", l->out_channels, 1, MAX_CHANNELS);
        check_range(l->name, "mask_bits", l->mask_bits, conv ? MIN_MASK_BITS : 0, conv ? MAX_MASK_BITS : 0);
        check_range(l->name, "weight_shift", l->weight_shift, 0, conv ? WEIGHT_SHIFT_MAX : 0);
        check_range(l->name, "bias_shift", l->bias_shift, 0, conv ? BIAS_SHIFT_MAX : 0);
        check_range(l->name, "out_shift", l->out_shift, 0, conv ? OUT_SHIFT_MAX : 0);
        if (!conv) {
            check_range(l->name, "payload_offset", l->payload_offset, 0, 0);
            check_range(l->name, "payload_size", l->payload_size, 0, 0);
            check_range(l->name, "payload_crc32", rd32(r + 44), 0, 0);
            if (l->out_channels != l->in_channels)
                fail("FieldOutOfRange", "layer %s: pool out_channels %u differs from in_channels %u", l->name,
                     l->out_channels, l->in_channels);
        }
        /* the chain rule (SPEC 3) */
        if (first && !conv)
            fail("ChainMismatch", "layer %s: the first layer must be a conv, not kind %u", l->name, l->kind);
        if (l->in_channels != channels)
            fail("ChainMismatch", "layer %s: in_channels %u, but %s %u", l->name, l->in_channels,
                 first ? "the input buffer has" : "the previous layer gives", channels);
        if (!conv) {
            if (height < 2u || width < 2u)
                fail("MapTooSmall", "layer %s: max-pool gets a %ux%u map, needs at least 2x2", l->name, height, width);
            height /= 2u;
            width /= 2u;
        }
        channels = l->out_channels;
        first = 0;
        if (conv) {
            uint32_t crc = check_payload(b, size, l, region_end);
            if (l->alpha_bits != ALPHA_BITS || l->flags != 0u)
                uses_v2 = 1;
            if (crc != rd32(r + 44))
                fail("PayloadCrcMismatch", "layer %s: payload CRC32 %08lx does not match the record's %08lx", l->name,
                     (unsigned long)crc, (unsigned long)rd32(r + 44));
            region_end = l->payload_offset + l->payload_size;
            if (l->in_channels > max_in)
                max_in = l->in_channels;
        }
    }
    if (m->version == FORMAT_V2 && !uses_v2)
        fail("BadHeaderField", "header: version 2, but no conv layer uses a v2 feature (alpha_bits below 8 or "
                               "KERNEL_PRESENCE): such a blob is version 1");
    if (region_end != size)
        fail("TrailingData", "%llu bytes follow the last payload (it ends at %llu, the file at %llu)",
             (unsigned long long)(size - region_end), (unsigned long long)region_end, (unsigned long long)size);
    /* Every structural check passed. The last check (SPEC 5): the accumulator bound, layer by layer. */
    G.weights = (int32_t *)malloc((size_t)max_in * KERNEL_TAPS * sizeof(int32_t));
    if (G.weights == NULL)
        fail("OutOfMemory", "cannot allocate the weights of one output channel");
    for (index = 0; index < m->layer_count; index++) {
        const Layer *l = &m->layers[index];
        if (l->kind == KIND_CONV) {
            int64_t bound = conv_bound(l, index == 0 ? first_layer_input_max(m) : ACT_MAX);
            if (bound > ACC_MAX)
                fail("AccumulatorOverflow",
                     "layer %s: worst-case accumulator %lld exceeds %lld (SPEC 4.5); alpha, the bias or bias_shift "
                     "is too large",
                     l->name, (long long)bound, (long long)ACC_MAX);
        }
    }
}

/* ---- the arithmetic (SPEC 4) -------------------------------------------------------------------- */

/* n * k bytes, refusing a product that does not fit size_t or the 2^40-byte sanity cap. */
static size_t checked_bytes(uint64_t n, uint64_t k, const char *what)
{
    uint64_t bytes;
    if (n != 0 && k > ((uint64_t)1 << 40) / n)
        fail("OutOfMemory", "%s: %llu x %llu bytes is too large", what, (unsigned long long)n, (unsigned long long)k);
    bytes = n * k;
    if (bytes > (uint64_t)(size_t)-1)
        fail("OutOfMemory", "%s: %llu bytes do not fit this machine's address space", what, (unsigned long long)bytes);
    return (size_t)bytes;
}

static void *alloc_or_fail(size_t bytes, const char *what)
{
    void *p = malloc(bytes > 0 ? bytes : 1u);
    if (p == NULL)
        fail("OutOfMemory", "cannot allocate %llu bytes for %s", (unsigned long long)bytes, what);
    return p;
}

/* Rows of accumulators are LANES-aligned so that the inner loop runs whole blocks of LANES elements,
 * which compilers vectorize at -O2; the extra columns compute values nobody reads. */
#define LANES 8u

static size_t acc_stride(unsigned w) { return ((size_t)w + LANES - 1u) / LANES * LANES; }

/* The padded input: a zero border of one element (SPEC 4.2: the padding value is 0 in the integer
 * domain), rows of acc_stride(w) + 2 elements, zero beyond the border. */
static size_t pad_stride(unsigned w) { return acc_stride(w) + 2u; }

static void pad_input(const unsigned char *map, unsigned channels, unsigned h, unsigned w, const unsigned *mean)
{
    size_t pw = pad_stride(w), plane = ((size_t)h + 2u) * pw, c, y, x;
    memset(G.padded, 0, plane * channels * sizeof(int16_t));
    for (c = 0; c < channels; c++) {
        const unsigned char *src = map + c * (size_t)h * w;
        int16_t *dst = G.padded + c * plane + pw + 1u;
        int sub = mean != NULL ? (int)mean[c] : 0; /* SPEC 4.1: x0 = p - input_mean, conv1 only */
        for (y = 0; y < h; y++)
            for (x = 0; x < w; x++)
                dst[y * pw + x] = (int16_t)((int)src[y * w + x] - sub);
    }
}

/* SPEC 4.2: 3x3 conv, zero padding 1, bias << bias_shift, round-half-up shift, ReLU, saturation. */
static void conv3x3(const Layer *l, unsigned h, unsigned w, unsigned char *out)
{
    size_t pw = pad_stride(w), plane = ((size_t)h + 2u) * pw, aw = acc_stride(w), hw = (size_t)h * w;
    unsigned o, i, t, k;
    uint64_t stored = 0; /* rank of kernel (o, 0) among the stored kernels */
    size_t y, x;
    for (o = 0; o < l->out_channels; o++) {
        /* |bias| << bias_shift <= the proven bound < 2^31: no overflow in 64 bits or in int32 */
        int32_t start = (int32_t)((int64_t)bias_at(l, o) * ((int64_t)1 << l->bias_shift));
        unsigned char *dst = out + (size_t)o * hw;
        weights_of(l, o, G.weights, &stored);
        for (x = 0; x < (size_t)h * aw; x++)
            G.acc[x] = start;
        for (i = 0; i < l->in_channels; i++) {
            const int16_t *in = G.padded + (size_t)i * plane;
            const int32_t *wk = G.weights + (size_t)i * KERNEL_TAPS;
            if (!kernel_present(l, (uint64_t)o * l->in_channels + i))
                continue; /* a pruned kernel (SPEC 3.5) weighs zero: skipped, as the chip skips it */
            for (y = 0; y < h; y++) {
                int32_t *acc = G.acc + y * aw;
                for (t = 0; t < KERNEL_TAPS; t++) {
                    const int32_t wt = wk[t];
                    const int16_t *row = in + (y + t / 3u) * pw + t % 3u;
                    if (wt == 0)
                        continue; /* alpha 0: the tap adds nothing */
                    for (x = 0; x < aw; x += LANES)
                        for (k = 0; k < LANES; k++)
                            acc[x + k] += wt * row[x + k];
                }
            }
        }
        for (y = 0; y < h; y++)
            for (x = 0; x < w; x++) {
                int64_t v = G.acc[y * aw + x];
                if (l->out_shift > 0) {
                    v += (int64_t)1 << (l->out_shift - 1u);
                    v = v < 0 ? -1 : v / ((int64_t)1 << l->out_shift); /* floor; any negative -> 0 below */
                }
                dst[y * w + x] = (unsigned char)(v < 0 ? 0 : v > ACT_MAX ? ACT_MAX : v);
            }
    }
}

/* SPEC 4.3: 2x2 max-pool, stride 2, an odd last row or column dropped. */
static void maxpool2x2(const unsigned char *in, unsigned channels, unsigned h, unsigned w, unsigned char *out)
{
    size_t oh = h / 2u, ow = w / 2u, c, y, x;
    for (c = 0; c < channels; c++) {
        const unsigned char *src = in + c * (size_t)h * w;
        unsigned char *dst = out + c * oh * ow;
        for (y = 0; y < oh; y++)
            for (x = 0; x < ow; x++) {
                const unsigned char *p = src + 2u * y * w + 2u * x;
                unsigned char a = p[0] > p[1] ? p[0] : p[1];
                unsigned char b = p[w] > p[w + 1u] ? p[w] : p[w + 1u];
                dst[y * ow + x] = a > b ? a : b;
            }
    }
}

/* ---- files -------------------------------------------------------------------------------------- */

static void read_pixels(const char *path, const Model *m)
{
    size_t need = checked_bytes((uint64_t)INPUT_CHANNELS * m->height, m->width, "the input buffer"), got;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail("PixelsUnreadable", "%s: cannot read (%s)", path, strerror(errno));
    G.pixels = (unsigned char *)alloc_or_fail(need + 1u, "the input image");
    got = fread(G.pixels, 1, need + 1u, f);
    if (ferror(f))
        fail("PixelsUnreadable", "%s: cannot read (%s)", path, strerror(errno));
    fclose(f);
    if (got != need)
        fail("BadPixels", "%s: %s %lu bytes, the blob's input needs 3x%ux%u = %lu (raw uint8, C-order (C, H, W))", path,
             got > need ? "more than" : "only", (unsigned long)(got > need ? need : got), m->height, m->width,
             (unsigned long)need);
}

static void output_path(char *out, size_t cap, const char *dir, unsigned index, const char *name, const char *tail)
{
    int n = snprintf(out, cap, "%s/%02u_%s.u8%s", dir, index, name, tail);
    if (n < 0 || (size_t)n >= cap)
        fail("OutputUnwritable", "%s: the folder name is too long", dir);
}

static void prepare_outdir(const char *dir)
{
    char probe[4096];
    FILE *f;
    int n;
    if (CHIPQ_MKDIR(dir) != 0 && errno != EEXIST)
        fail("OutputUnwritable", "%s: cannot create the folder (%s)", dir, strerror(errno));
    n = snprintf(probe, sizeof probe, "%s/.chipq_ref.probe", dir);
    if (n < 0 || (size_t)n >= sizeof probe)
        fail("OutputUnwritable", "%s: the folder name is too long", dir);
    f = fopen(probe, "wb");
    if (f == NULL)
        fail("OutputUnwritable", "%s: cannot write into it (%s)", dir, strerror(errno));
    fclose(f);
    remove(probe);
}

/* Write one layer's map through a temporary name and a rename: no half-written file under the name. */
static void write_map(const char *dir, unsigned index, const char *name, const unsigned char *map, size_t bytes)
{
    char path[4096], tmp[4096];
    FILE *f;
    int ok;
    output_path(path, sizeof path, dir, index, name, "");
    output_path(tmp, sizeof tmp, dir, index, name, ".tmp");
    f = fopen(tmp, "wb");
    if (f == NULL)
        fail("OutputUnwritable", "%s: cannot write (%s)", tmp, strerror(errno));
    ok = fwrite(map, 1, bytes, f) == bytes;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        remove(tmp);
        fail("OutputUnwritable", "%s: write failed (disk full?)", tmp);
    }
#if defined(_WIN32)
    remove(path);
#endif
    if (rename(tmp, path) != 0) {
        remove(tmp);
        fail("OutputUnwritable", "%s: cannot rename into place (%s)", path, strerror(errno));
    }
}

/* ---- main --------------------------------------------------------------------------------------- */

static void run(const Model *m, const char *outdir)
{
    unsigned index, channels = INPUT_CHANNELS, h = m->height, w = m->width;
    uint64_t most_map = 0, most_padded = 0;
    size_t map_bytes, padded_bytes, acc_bytes;
    const unsigned char *current = G.pixels;

    /* The largest map and padded input of any layer, checked and allocated once. */
    for (index = 0; index < m->layer_count; index++) {
        const Layer *l = &m->layers[index];
        if (l->kind == KIND_CONV) {
            uint64_t padded = (uint64_t)l->in_channels * ((uint64_t)h + 2u) * pad_stride(w);
            if (padded > most_padded)
                most_padded = padded;
        } else {
            h /= 2u;
            w /= 2u;
        }
        if ((uint64_t)l->out_channels * h * w > most_map)
            most_map = (uint64_t)l->out_channels * h * w;
    }
    map_bytes = checked_bytes(most_map, 1, "an activation map");
    padded_bytes = checked_bytes(most_padded, sizeof(int16_t), "a padded conv input");
    acc_bytes = checked_bytes((uint64_t)m->height * acc_stride(m->width), sizeof(int32_t), "the accumulators");
    G.map = (unsigned char *)alloc_or_fail(map_bytes, "an activation map");
    G.next = (unsigned char *)alloc_or_fail(map_bytes, "an activation map");
    G.padded = (int16_t *)alloc_or_fail(padded_bytes, "a padded conv input");
    G.acc = (int32_t *)alloc_or_fail(acc_bytes, "the accumulators");

    h = m->height;
    w = m->width;
    for (index = 0; index < m->layer_count; index++) {
        const Layer *l = &m->layers[index];
        unsigned char *swap;
        if (l->kind == KIND_CONV) {
            pad_input(current, channels, h, w, index == 0 ? m->mean : NULL);
            conv3x3(l, h, w, G.next);
        } else {
            maxpool2x2(current, channels, h, w, G.next);
            h /= 2u;
            w /= 2u;
        }
        channels = l->out_channels;
        write_map(outdir, index, l->name, G.next, (size_t)channels * h * w);
        swap = G.map;
        G.map = G.next;
        G.next = swap;
        current = G.map;
    }
}

static void usage(void)
{
    fail("UsageError", "usage: chipq_ref BLOB PIXELS.u8 OUTDIR | chipq_ref --check BLOB...");
}

static Model model; /* static: 64 layer records, kept off the stack */

/* --check with several blobs: one line each on stdout; exit 2 when any is refused. */
static int check_many(int count, char **paths)
{
    static int index, refused; /* static: unchanged by longjmp */
    for (index = 0; index < count; index++) {
        G.checking = paths[index];
        if (setjmp(G.next_blob) == 0) {
            read_model(paths[index], &model);
            printf("%s: ok, %u layers, input %ux%u\n", paths[index], model.layer_count, model.height, model.width);
        } else {
            refused++;
        }
        if (G.file != NULL)
            fclose(G.file);
        free(G.blob);
        free(G.weights);
        G.file = NULL;
        G.blob = NULL;
        G.weights = NULL;
    }
    G.checking = NULL;
    return refused > 0 ? EXIT_BAD : 0;
}

int main(int argc, char **argv)
{
    crc_init();
    if (argc > 3 && strcmp(argv[1], "--check") == 0)
        return check_many(argc - 2, argv + 2);
    if (argc == 3 && strcmp(argv[1], "--check") == 0) {
        read_model(argv[2], &model);
        printf("%s: ok, %u layers, input %ux%u\n", argv[2], model.layer_count, model.height, model.width);
        return 0;
    }
    if (argc != 4 || argv[1][0] == '-')
        usage();
    read_model(argv[1], &model);
    read_pixels(argv[2], &model);
    prepare_outdir(argv[3]);
    run(&model, argv[3]);
    printf("%u layer outputs written to %s\n", model.layer_count, argv[3]);
    return 0;
}
