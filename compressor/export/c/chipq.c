/*
 * chipq.c - the chipq C model as a library (chipq.h): a C99 reference executor of chipq chip format
 * v1 and v2, libc only.
 *
 * It implements formats/SPEC.md (shipped beside this file): the reader obligations of section 5, in
 * the order that section lists (chipq_load), and the integer arithmetic of section 4 (chipq_run,
 * chipq_run_layer). A v2 conv layer may store narrower alpha codes (SPEC 3.4: the chip multiplies by
 * code << (8 - alpha_bits)) and a kernel presence bitmap (SPEC 3.5: only present kernels are stored,
 * an absent kernel weighs zero and the conv loop skips it).
 *
 * The blob is hostile input: every check runs before anything a field could size is allocated; sizes
 * and offsets are 64-bit and checked before use; nothing is read outside the blob. A failure is one
 * status code (chipq.h: the error classes of chipq's Python reader) and one line of message.
 *
 * The arithmetic: the accumulator is int32_t. The reader proves the bound of SPEC 4.5 for every layer
 * before anything runs, so no partial sum can overflow whatever the order of the additions. Right
 * shifts of negative values are never used (they are implementation-defined in C): a negative rounded
 * accumulator is a 0 output whatever its shift, since floor(v / 2^s) < 0 for v < 0.
 */
#include "chipq.h"

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

/* ---- failure: a status code and one line, back to chipq_load -------------------------------------- */

static const char *const STATUS_NAMES[CHIPQ_STATUS_COUNT] = {
    "OK", "BlobUnreadable", "FileTooLarge", "TruncatedFile", "BadMagic", "UnsupportedVersion", "BadHeaderField",
    "HeaderCrcMismatch", "FileSizeMismatch", "BadLayerCount", "TableOutOfBounds", "TableCrcMismatch",
    "UnknownLayerKind", "NonZeroReserved", "BadLayerName", "DuplicateLayerName", "FieldOutOfRange", "ShapeMismatch",
    "ChainMismatch", "MapTooSmall", "MisalignedPayload", "OverlappingPayload", "PayloadGapTooLong",
    "PayloadSizeMismatch", "PayloadOutOfBounds", "NonZeroPadding", "PayloadCrcMismatch", "TrailingData",
    "AccumulatorOverflow", "BlobWriteFailed", "OutOfMemory", "BadArgument"};

const char *chipq_status_name(int status)
{
    return status >= 0 && status < CHIPQ_STATUS_COUNT ? STATUS_NAMES[status] : "Unknown";
}

static int status_of(const char *type)
{
    int s;
    for (s = 1; s < CHIPQ_STATUS_COUNT; s++)
        if (strcmp(STATUS_NAMES[s], type) == 0)
            return s;
    return CHIPQ_BAD_ARGUMENT; /* not reached: every type below is in the table */
}

/* chipq_load's failure context: static, so one load at a time (chipq.h). */
static struct {
    jmp_buf back;
    int status;
    char message[512];
    int32_t *weights; /* one output channel's weights while the bound of SPEC 4.5 is checked */
} G;

/* Record "<message>" with its status and return to chipq_load. */
static void fail(const char *type, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(G.message, sizeof G.message, format, args);
    va_end(args);
    G.status = status_of(type);
    longjmp(G.back, 1);
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

struct chipq_model {
    unsigned version;
    unsigned height, width, channel_order;
    unsigned mean[INPUT_CHANNELS];
    unsigned layer_count;
    Layer layers[MAX_LAYERS];
    unsigned in_h[MAX_LAYERS], in_w[MAX_LAYERS], out_h[MAX_LAYERS], out_w[MAX_LAYERS];
    unsigned char *blob; /* the private copy the layers point into */
    uint64_t size;
};
typedef struct chipq_model Model;

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
            fail("BadHeaderField", "header: %s %llu, the format requires %llu", fields[i], (unsigned long long)values[i],
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
        fail("BadHeaderField", "header: input_channels %u, the format requires %u", (unsigned)b[36], INPUT_CHANNELS);
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

static void read_model(Model *m)
{
    uint64_t size = m->size, region_end, table_end;
    const unsigned char *b = m->blob;
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
        m->in_h[index] = height;
        m->in_w[index] = width;
        if (!conv) {
            if (height < 2u || width < 2u)
                fail("MapTooSmall", "layer %s: max-pool gets a %ux%u map, needs at least 2x2", l->name, height, width);
            height /= 2u;
            width /= 2u;
        }
        m->out_h[index] = height;
        m->out_w[index] = width;
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

/* Output columns per block: the conv's inner loops run over blocks of XB columns of a fixed length,
 * which compilers vectorize at -O2 (a row of accumulators is padded to whole blocks). */
#define XB 16u
#define SCRATCH_ALIGN 64u

static uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1u) / to * to; }

/* The padded input of a conv: a zero border of one element (SPEC 4.2: the padding value is 0 in the
 * integer domain), stored row-major by padded row and then channel, (h + 2, I, pad_stride(w)), so
 * that the three input rows one output row needs are one contiguous block for every channel. Rows are
 * a whole number of XB blocks plus the border; the extra columns are zero and their results unread. */
static uint64_t pad_stride(uint64_t w) { return round_up(w, XB) + 2u; }

/* Where the parts of the scratch memory lie (byte offsets, each SCRATCH_ALIGN-aligned). */
typedef struct {
    uint64_t map[2], padded, weights, alphas, chans, starts, acc, total;
} Layout;

/* The scratch layout of a model: two maps for chipq_run's ping-pong, then one conv's work area. */
static Layout layout_of(const Model *m)
{
    Layout s;
    uint64_t most_map = 0, most_padded = 0, most_kernels = 0, most_out = 0, most_width = 0, at = 0;
    unsigned index;
    for (index = 0; index < m->layer_count; index++) {
        const Layer *l = &m->layers[index];
        uint64_t map = (uint64_t)l->out_channels * m->out_h[index] * m->out_w[index];
        if (map > most_map)
            most_map = map;
        if (l->kind == KIND_CONV) {
            uint64_t padded = ((uint64_t)m->in_h[index] + 2u) * l->in_channels * pad_stride(m->in_w[index]);
            if (padded > most_padded)
                most_padded = padded;
            if (m->in_w[index] > most_width)
                most_width = m->in_w[index];
            if (l->stored > most_kernels)
                most_kernels = l->stored;
            if (l->out_channels > most_out)
                most_out = l->out_channels;
        }
    }
    s.map[0] = at;
    at = round_up(at + most_map, SCRATCH_ALIGN);
    s.map[1] = at;
    at = round_up(at + most_map, SCRATCH_ALIGN);
    s.padded = at;
    at = round_up(at + most_padded * sizeof(int16_t), SCRATCH_ALIGN);
    s.weights = at; /* int16 (P, 9): the stored kernels' weights, decoded once per layer */
    at = round_up(at + most_kernels * KERNEL_TAPS * sizeof(int16_t), SCRATCH_ALIGN);
    s.alphas = at; /* int16 (P): the stored kernels' alphas */
    at = round_up(at + most_kernels * sizeof(int16_t), SCRATCH_ALIGN);
    s.chans = at; /* uint16 (P): the input channel of each stored kernel */
    at = round_up(at + most_kernels * sizeof(uint16_t), SCRATCH_ALIGN);
    s.starts = at; /* uint32 (O + 1): where output channel o's kernels start among the stored ones */
    at = round_up(at + (most_out + 1u) * sizeof(uint32_t), SCRATCH_ALIGN);
    s.acc = at; /* int32 (round_up(w, XB)): one output row of accumulators */
    at = round_up(at + round_up(most_width, XB) * sizeof(int32_t), SCRATCH_ALIGN);
    s.total = at + SCRATCH_ALIGN; /* room to align the caller's pointer */
    return s;
}

/* SPEC 4.1 (conv1: x0 = p - input_mean) and 4.2's zero padding, into the (h + 2, I, pw) layout. */
static void pad_input(const unsigned char *map, unsigned channels, unsigned h, unsigned w, const unsigned *mean,
                      int16_t *padded)
{
    size_t pw = (size_t)pad_stride(w), row = (size_t)channels * pw, c, y, x;
    memset(padded, 0, ((size_t)h + 2u) * row * sizeof(int16_t));
    for (y = 0; y < h; y++)
        for (c = 0; c < channels; c++) {
            const unsigned char *src = map + (c * h + y) * (size_t)w;
            int16_t *dst = padded + (y + 1u) * row + c * pw + 1u;
            int sub = mean != NULL ? (int)mean[c] : 0;
            for (x = 0; x < w; x++)
                dst[x] = (int16_t)((int)src[x] - sub);
        }
}

/* The largest mask width whose nine-tap sums of M * x fit int16_t: |sum| <= 9 * (2^m - 1) * 255, which
 * is 16,065 for m = 3 (activations are 0..255, conv1's input |p - mean| <= 255) and 34,425 for m = 4. */
#define FACTOR_MASK_BITS 3u

/* Decode a layer's stored kernels once, in their o-major order (SPEC 3.1, 3.3, 3.4).
 *
 * starts[o] .. starts[o + 1] are output channel o's stored kernels and chans[j] the input channel of
 * kernel j; absent kernels (SPEC 3.5) weigh zero and are simply not in the list. taps[j * 9 + t] is
 *  - with m <= FACTOR_MASK_BITS: the level M = 2c - (2^m - 1) of tap t, and alphas[j] the 8-bit alpha
 *    (code << (8 - alpha_bits)), so that W = alpha * M is applied as alpha * (sum_t M_t * x_t);
 *  - else the weight W = alpha * M itself (|W| <= 255 * 31 = 7905: int16_t holds it exactly).
 * Either way the int16 x int16 products the inner loops form in int32 are exact. */
static void decode_weights(const Layer *l, int16_t *taps, int16_t *alphas, uint16_t *chans, uint32_t *starts)
{
    uint64_t alpha_size = packed_size(l->stored, l->alpha_bits);
    uint64_t mask_size = packed_size(l->stored * KERNEL_TAPS, l->mask_bits);
    int top = (1 << l->mask_bits) - 1, factor = l->mask_bits <= FACTOR_MASK_BITS;
    uint64_t j = 0;
    unsigned o, i, t;
    for (o = 0; o < l->out_channels; o++) {
        starts[o] = (uint32_t)j;
        for (i = 0; i < l->in_channels; i++) {
            int alpha;
            if (!kernel_present(l, (uint64_t)o * l->in_channels + i))
                continue;
            alpha = (int)(field_at(l->alpha, alpha_size, j, l->alpha_bits) << (ALPHA_BITS - l->alpha_bits));
            for (t = 0; t < KERNEL_TAPS; t++) {
                int level = 2 * (int)field_at(l->mask, mask_size, j * KERNEL_TAPS + t, l->mask_bits) - top;
                taps[j * KERNEL_TAPS + t] = (int16_t)(factor ? level : alpha * level);
            }
            alphas[j] = (int16_t)(factor ? alpha : 1);
            chans[j] = (uint16_t)i; /* i < 4096 */
            j++;
        }
    }
    starts[l->out_channels] = (uint32_t)j;
}

/* SPEC 4.2's requantization of one accumulator: round-half-up shift, ReLU, saturation to uint8. */
static unsigned char requantize(int32_t acc, unsigned shift)
{
    int64_t v = acc;
    if (shift > 0) {
        v += (int64_t)1 << (shift - 1u);
        v = v < 0 ? -1 : v / ((int64_t)1 << shift); /* floor; any negative -> 0 below */
    }
    return (unsigned char)(v < 0 ? 0 : v > ACT_MAX ? ACT_MAX : v);
}

/* acc[x] += sum_t W_t * x_t for one kernel over one output row, W = alpha * M (SPEC 4.2).
 * r0, r1, r2: the kernel's three padded input rows (ky = 0, 1, 2); element x + kx is tap (ky, kx) of
 * output column x. Blocks of XB columns of fixed length, so that the compiler vectorizes them. */
static void kernel_row(int32_t *restrict acc, const int16_t *restrict r0, const int16_t *restrict r1,
                       const int16_t *restrict r2, const int16_t *restrict m, int alpha16, int factor, size_t aw)
{
    size_t xb;
    unsigned k;
    if (factor) { /* mask_bits <= FACTOR_MASK_BITS: the nine products summed exactly in int16_t */
        const int16_t alpha = (int16_t)alpha16;
        for (xb = 0; xb < aw; xb += XB) {
            int16_t s[XB];
            for (k = 0; k < XB; k++)
                s[k] = (int16_t)(m[0] * r0[xb + k] + m[1] * r0[xb + k + 1u] + m[2] * r0[xb + k + 2u] +
                                 m[3] * r1[xb + k] + m[4] * r1[xb + k + 1u] + m[5] * r1[xb + k + 2u] +
                                 m[6] * r2[xb + k] + m[7] * r2[xb + k + 1u] + m[8] * r2[xb + k + 2u]);
            for (k = 0; k < XB; k++)
                acc[xb + k] += (int32_t)alpha * (int32_t)s[k];
        }
    } else { /* m[t] is the weight W_t */
        for (xb = 0; xb < aw; xb += XB)
            for (k = 0; k < XB; k++)
                acc[xb + k] += (int32_t)m[0] * r0[xb + k] + (int32_t)m[1] * r0[xb + k + 1u] +
                               (int32_t)m[2] * r0[xb + k + 2u] + (int32_t)m[3] * r1[xb + k] +
                               (int32_t)m[4] * r1[xb + k + 1u] + (int32_t)m[5] * r1[xb + k + 2u] +
                               (int32_t)m[6] * r2[xb + k] + (int32_t)m[7] * r2[xb + k + 1u] +
                               (int32_t)m[8] * r2[xb + k + 2u];
    }
}

/* SPEC 4.2: 3x3 conv, zero padding 1, bias << bias_shift, the sum over the stored kernels, requantize.
 *
 * Loop order, for the cache: output row y (its three padded input rows, all channels, stay in the
 * L2 cache), output channel o (one row of accumulators in L1), then every stored kernel (o, i) of o
 * over the whole row. */
static void conv3x3(const Layer *l, unsigned h, unsigned w, const int16_t *padded, const int16_t *taps,
                    const int16_t *alphas, const uint16_t *chans, const uint32_t *starts, int32_t *acc,
                    unsigned char *out)
{
    size_t pw = (size_t)pad_stride(w), aw = (size_t)round_up(w, XB), row = (size_t)l->in_channels * pw, y, x;
    int factor = l->mask_bits <= FACTOR_MASK_BITS;
    unsigned o;
    uint32_t j;
    for (y = 0; y < h; y++) {
        const int16_t *rows = padded + y * row; /* padded rows y, y + 1, y + 2 = input rows y - 1 .. y + 1 */
        for (o = 0; o < l->out_channels; o++) {
            /* |bias| << bias_shift <= the proven bound < 2^31: no overflow in 64 bits or in int32 */
            int32_t start = (int32_t)((int64_t)bias_at(l, o) * ((int64_t)1 << l->bias_shift));
            unsigned char *dst = out + ((size_t)o * h + y) * w;
            for (x = 0; x < aw; x++)
                acc[x] = start;
            for (j = starts[o]; j < starts[o + 1u]; j++) {
                const int16_t *r0 = rows + (size_t)chans[j] * pw;
                kernel_row(acc, r0, r0 + row, r0 + 2u * row, taps + (size_t)j * KERNEL_TAPS, alphas[j], factor, aw);
            }
            for (x = 0; x < w; x++)
                dst[x] = requantize(acc[x], l->out_shift);
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

/* ---- the library (chipq.h) ---------------------------------------------------------------------- */

static unsigned char *aligned(void *scratch)
{
    uintptr_t at = (uintptr_t)scratch;
    return (unsigned char *)scratch + (SCRATCH_ALIGN - at % SCRATCH_ALIGN) % SCRATCH_ALIGN;
}

int chipq_load(const void *blob, size_t size, chipq_model **model, char *message, size_t message_size)
{
    static Model *m; /* static: unchanged by longjmp */
    if (message != NULL && message_size > 0)
        message[0] = '\0';
    if (model == NULL || (blob == NULL && size > 0)) {
        if (message != NULL && message_size > 0)
            snprintf(message, message_size, "chipq_load: no blob or no place for the model");
        return CHIPQ_BAD_ARGUMENT;
    }
    *model = NULL;
    m = NULL;
    G.weights = NULL;
    if (setjmp(G.back) == 0) {
        if ((uint64_t)size > MAX_FILE_SIZE)
            fail("FileTooLarge", "file is %llu bytes, more than the %llu a blob may have", (unsigned long long)size,
                 (unsigned long long)MAX_FILE_SIZE);
        crc_init();
        m = (Model *)calloc(1, sizeof *m);
        if (m == NULL || (m->blob = (unsigned char *)malloc(size > 0 ? size : 1u)) == NULL)
            fail("OutOfMemory", "cannot allocate %llu bytes to keep the blob", (unsigned long long)size);
        if (size > 0)
            memcpy(m->blob, blob, size);
        m->size = size;
        read_model(m);
        free(G.weights);
        G.weights = NULL;
        *model = m;
        return CHIPQ_OK;
    }
    free(G.weights);
    G.weights = NULL;
    chipq_free(m);
    if (message != NULL && message_size > 0)
        snprintf(message, message_size, "%s", G.message);
    return G.status;
}

void chipq_free(chipq_model *model)
{
    if (model != NULL)
        free(model->blob);
    free(model);
}

void chipq_model_get_info(const chipq_model *m, chipq_model_info *info)
{
    unsigned c;
    info->version = m->version;
    info->layer_count = m->layer_count;
    info->input_height = m->height;
    info->input_width = m->width;
    info->channel_order = m->channel_order;
    for (c = 0; c < INPUT_CHANNELS; c++)
        info->input_mean[c] = m->mean[c];
}

int chipq_layer_get_info(const chipq_model *m, unsigned index, chipq_layer_info *info)
{
    const Layer *l;
    if (m == NULL || info == NULL || index >= m->layer_count)
        return CHIPQ_BAD_ARGUMENT;
    l = &m->layers[index];
    memcpy(info->name, l->name, NAME_SIZE);
    info->kind = l->kind;
    info->in_channels = l->in_channels;
    info->in_height = m->in_h[index];
    info->in_width = m->in_w[index];
    info->out_channels = l->out_channels;
    info->out_height = m->out_h[index];
    info->out_width = m->out_w[index];
    info->mask_bits = l->mask_bits;
    info->alpha_bits = l->kind == KIND_CONV ? l->alpha_bits : 0u;
    info->flags = l->flags;
    info->weight_shift = l->weight_shift;
    info->bias_shift = l->bias_shift;
    info->out_shift = l->out_shift;
    info->kernels = l->kind == KIND_CONV ? (uint64_t)l->out_channels * l->in_channels : 0u;
    info->kept_kernels = l->kind == KIND_CONV ? l->stored : 0u;
    return CHIPQ_OK;
}

/* A byte count that does not fit size_t (only on a 32-bit machine) is reported as SIZE_MAX: no
 * allocation of that size succeeds, so a caller never gets a buffer that is too small. */
static size_t as_size(uint64_t bytes) { return bytes > (uint64_t)(size_t)-1 ? (size_t)-1 : (size_t)bytes; }

size_t chipq_input_bytes(const chipq_model *m) { return as_size((uint64_t)INPUT_CHANNELS * m->height * m->width); }

size_t chipq_output_bytes(const chipq_model *m, unsigned index)
{
    if (index >= m->layer_count)
        return 0;
    return as_size((uint64_t)m->layers[index].out_channels * m->out_h[index] * m->out_w[index]);
}

size_t chipq_scratch_bytes(const chipq_model *m) { return as_size(layout_of(m).total); }

/* One layer, its work area in `base` (aligned scratch) laid out as `s`. */
static void run_layer(const Model *m, unsigned index, const uint8_t *in, uint8_t *out, unsigned char *base,
                      const Layout *s)
{
    const Layer *l = &m->layers[index];
    unsigned h = m->in_h[index], w = m->in_w[index];
    if (l->kind == KIND_CONV) {
        int16_t *padded = (int16_t *)(void *)(base + s->padded), *taps = (int16_t *)(void *)(base + s->weights);
        int16_t *alphas = (int16_t *)(void *)(base + s->alphas);
        uint16_t *chans = (uint16_t *)(void *)(base + s->chans);
        uint32_t *starts = (uint32_t *)(void *)(base + s->starts);
        int32_t *acc = (int32_t *)(void *)(base + s->acc);
        pad_input(in, l->in_channels, h, w, index == 0 ? m->mean : NULL, padded);
        decode_weights(l, taps, alphas, chans, starts);
        conv3x3(l, h, w, padded, taps, alphas, chans, starts, acc, out);
    } else {
        maxpool2x2(in, l->in_channels, h, w, out);
    }
}

int chipq_run_layer(const chipq_model *m, unsigned index, const uint8_t *in, uint8_t *out, void *scratch)
{
    Layout s;
    if (m == NULL || in == NULL || out == NULL || scratch == NULL || index >= m->layer_count)
        return CHIPQ_BAD_ARGUMENT;
    s = layout_of(m);
    run_layer(m, index, in, out, aligned(scratch), &s);
    return CHIPQ_OK;
}

int chipq_run(const chipq_model *m, const uint8_t *pixels, uint8_t *const *outputs, void *scratch)
{
    Layout s;
    unsigned char *base;
    const uint8_t *in = pixels;
    unsigned index;
    if (m == NULL || pixels == NULL || outputs == NULL || scratch == NULL)
        return CHIPQ_BAD_ARGUMENT;
    s = layout_of(m);
    base = aligned(scratch);
    for (index = 0; index < m->layer_count; index++) {
        uint8_t *out = outputs[index] != NULL ? outputs[index] : base + s.map[index % 2u];
        run_layer(m, index, in, out, base, &s);
        in = out;
    }
    return CHIPQ_OK;
}
