/*
 * chipq.h - the chipq C model as a library a testbench links (C99, libc only).
 *
 *     chipq_model *m;
 *     char why[256];
 *     int status = chipq_load(blob, blob_size, &m, why, sizeof why);   // every check of SPEC 5
 *     if (status != CHIPQ_OK) { printf("%s: %s\n", chipq_status_name(status), why); ... }
 *     void *scratch = malloc(chipq_scratch_bytes(m));
 *     chipq_run(m, pixels, outputs, scratch);      // outputs[l]: caller-owned, chipq_output_bytes(m, l)
 *     chipq_run_layer(m, l, in, out, scratch);     // or one layer on any input map
 *     chipq_free(m);
 *
 * Maps are uint8, C-order (C, H, W), the layout of `chipq verify --vectors` and of chipq_ref's files.
 * Layer 0's input is the raw pixel buffer (3, input_height, input_width), planes in the blob's channel
 * order; the library subtracts input_mean (SPEC 4.1). Every output equals chipq's golden executor.
 *
 * Status codes: 0 is success; the others are the error classes of chipq's Python reader
 * (chipq.formats.errors, the names the CLI prints) plus CHIPQ_OUT_OF_MEMORY and CHIPQ_BAD_ARGUMENT.
 * The numbers are stable: new codes are only ever appended.
 *
 * Threads: chipq_load may not run in two threads at once (it reports failures through one static
 * context); a loaded model is read-only, so chipq_run and chipq_run_layer may run concurrently on
 * one model, each call with its own scratch and output buffers.
 */
#ifndef CHIPQ_H
#define CHIPQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum chipq_status {
    CHIPQ_OK = 0,
    CHIPQ_BLOB_UNREADABLE = 1,
    CHIPQ_FILE_TOO_LARGE = 2,
    CHIPQ_TRUNCATED_FILE = 3,
    CHIPQ_BAD_MAGIC = 4,
    CHIPQ_UNSUPPORTED_VERSION = 5,
    CHIPQ_BAD_HEADER_FIELD = 6,
    CHIPQ_HEADER_CRC_MISMATCH = 7,
    CHIPQ_FILE_SIZE_MISMATCH = 8,
    CHIPQ_BAD_LAYER_COUNT = 9,
    CHIPQ_TABLE_OUT_OF_BOUNDS = 10,
    CHIPQ_TABLE_CRC_MISMATCH = 11,
    CHIPQ_UNKNOWN_LAYER_KIND = 12,
    CHIPQ_NON_ZERO_RESERVED = 13,
    CHIPQ_BAD_LAYER_NAME = 14,
    CHIPQ_DUPLICATE_LAYER_NAME = 15,
    CHIPQ_FIELD_OUT_OF_RANGE = 16,
    CHIPQ_SHAPE_MISMATCH = 17,
    CHIPQ_CHAIN_MISMATCH = 18,
    CHIPQ_MAP_TOO_SMALL = 19,
    CHIPQ_MISALIGNED_PAYLOAD = 20,
    CHIPQ_OVERLAPPING_PAYLOAD = 21,
    CHIPQ_PAYLOAD_GAP_TOO_LONG = 22,
    CHIPQ_PAYLOAD_SIZE_MISMATCH = 23,
    CHIPQ_PAYLOAD_OUT_OF_BOUNDS = 24,
    CHIPQ_NON_ZERO_PADDING = 25,
    CHIPQ_PAYLOAD_CRC_MISMATCH = 26,
    CHIPQ_TRAILING_DATA = 27,
    CHIPQ_ACCUMULATOR_OVERFLOW = 28,
    CHIPQ_BLOB_WRITE_FAILED = 29, /* the writer's error; never returned by this library */
    CHIPQ_OUT_OF_MEMORY = 30,
    CHIPQ_BAD_ARGUMENT = 31
};
#define CHIPQ_STATUS_COUNT 32

enum chipq_layer_kind { CHIPQ_CONV3X3_RELU = 1, CHIPQ_MAXPOOL2X2 = 2 };

typedef struct chipq_model chipq_model; /* opaque; a checked blob */

typedef struct {
    unsigned version;              /* 1 or 2 */
    unsigned layer_count;
    unsigned input_height, input_width;
    unsigned channel_order;        /* 0 = RGB, 1 = BGR */
    unsigned input_mean[3];
} chipq_model_info;

typedef struct {
    char name[16];                 /* NUL-terminated */
    unsigned kind;                 /* enum chipq_layer_kind */
    unsigned in_channels, in_height, in_width;
    unsigned out_channels, out_height, out_width;
    unsigned mask_bits, alpha_bits, flags, weight_shift, bias_shift, out_shift; /* pools: 0 */
    uint64_t kernels, kept_kernels; /* O*I and the stored ones (P); pools: 0 */
} chipq_layer_info;

/* "OK", "TruncatedFile", ... "OutOfMemory", "BadArgument"; "Unknown" for any other number. */
const char *chipq_status_name(int status);

/* Check `size` bytes of a blob as hostile input (SPEC 5, in its order, the accumulator bound of 4.5
 * included) and keep a private copy of them. On failure *model is NULL and `message` (if not NULL)
 * receives one NUL-terminated line naming the field or layer, as the CLI prints it. */
int chipq_load(const void *blob, size_t size, chipq_model **model, char *message, size_t message_size);
void chipq_free(chipq_model *model);

void chipq_model_get_info(const chipq_model *model, chipq_model_info *info);
int chipq_layer_get_info(const chipq_model *model, unsigned index, chipq_layer_info *info);
size_t chipq_input_bytes(const chipq_model *model);                /* 3 * H * W */
size_t chipq_output_bytes(const chipq_model *model, unsigned index); /* C * H * W of layer `index` */
/* Bytes of scratch memory chipq_run and chipq_run_layer need (any alignment malloc gives). */
size_t chipq_scratch_bytes(const chipq_model *model);

/* Layer `index` on its input map `in` (the pixels for layer 0), into `out`. */
int chipq_run_layer(const chipq_model *model, unsigned index, const uint8_t *in, uint8_t *out, void *scratch);

/* The whole network on `pixels`. outputs[l] (layer_count pointers) receives layer l's map, or is NULL
 * when the caller does not want it (it is then kept in scratch while the next layer needs it). */
int chipq_run(const chipq_model *model, const uint8_t *pixels, uint8_t *const *outputs, void *scratch);

#ifdef __cplusplus
}
#endif

#endif
