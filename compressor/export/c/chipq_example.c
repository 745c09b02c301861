/*
 * chipq_example.c - how a testbench links the chipq C model (chipq.h, libchipq.a).
 *
 *     chipq_example BLOB PIXELS.u8 OUT.u8
 *
 * Loads the blob from memory (chipq_load: every check of SPEC 5; a refusal prints the status name
 * the CLI prints), runs the whole network into caller-owned buffers (chipq_run), runs it again layer
 * by layer (chipq_run_layer) and checks both give the same maps, prints one line per layer and writes
 * the last layer's uint8 map, C-order (C, H, W), to OUT.u8. Exit 0: done; 1: the two runs differ;
 * 2: bad input (one line on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chipq.h"

/* A whole file in memory (a testbench might as well take it from a ROM image). */
static unsigned char *read_all(const char *path, size_t *size)
{
    unsigned char *data = NULL;
    long end;
    FILE *f = fopen(path, "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        (data = (unsigned char *)malloc(end > 0 ? (size_t)end : 1u)) == NULL || fread(data, 1, (size_t)end, f) != (size_t)end) {
        fprintf(stderr, "chipq_example: cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    *size = (size_t)end;
    return data;
}

int main(int argc, char **argv)
{
    chipq_model *model;
    chipq_model_info info;
    chipq_layer_info layer;
    char why[512];
    size_t blob_size, pixel_size, most = 0;
    unsigned char *blob, *pixels, *a, *b, **outputs;
    void *scratch;
    unsigned l, differ = 0;
    int status;
    FILE *out;

    if (argc != 4) {
        fprintf(stderr, "usage: chipq_example BLOB PIXELS.u8 OUT.u8\n");
        return 2;
    }
    blob = read_all(argv[1], &blob_size);
    status = chipq_load(blob, blob_size, &model, why, sizeof why);
    free(blob); /* chipq_load keeps its own copy */
    if (status != CHIPQ_OK) {
        fprintf(stderr, "chipq_example: %s: %s\n", chipq_status_name(status), why);
        return 2;
    }
    chipq_model_get_info(model, &info);
    pixels = read_all(argv[2], &pixel_size);
    if (pixel_size != chipq_input_bytes(model)) {
        fprintf(stderr, "chipq_example: %s has %lu bytes, the blob's input needs %lu\n", argv[2],
                (unsigned long)pixel_size, (unsigned long)chipq_input_bytes(model));
        return 2;
    }

    /* Caller-owned buffers: one per layer for chipq_run, two for the layer-by-layer run. */
    outputs = (unsigned char **)calloc(info.layer_count, sizeof *outputs);
    for (l = 0; l < info.layer_count && outputs != NULL; l++) {
        outputs[l] = (unsigned char *)malloc(chipq_output_bytes(model, l));
        if (outputs[l] == NULL)
            outputs = NULL; /* reported below (a few bytes leak on the way out) */
        else if (chipq_output_bytes(model, l) > most)
            most = chipq_output_bytes(model, l);
    }
    scratch = malloc(chipq_scratch_bytes(model));
    a = (unsigned char *)malloc(most);
    b = (unsigned char *)malloc(most);
    if (outputs == NULL || scratch == NULL || a == NULL || b == NULL) {
        fprintf(stderr, "chipq_example: out of memory\n");
        return 2;
    }
    chipq_run(model, pixels, outputs, scratch);

    printf("blob v%u, %u layers, input 3x%ux%u\n", info.version, info.layer_count, info.input_height, info.input_width);
    for (l = 0; l < info.layer_count; l++) {
        const unsigned char *in = l == 0 ? pixels : (l % 2u ? a : b);
        unsigned char *mine = l % 2u ? b : a;
        size_t n = chipq_output_bytes(model, l), i;
        unsigned long sum = 0;
        chipq_layer_get_info(model, l, &layer);
        chipq_run_layer(model, l, in, mine, scratch);
        for (i = 0; i < n; i++)
            sum += outputs[l][i];
        if (memcmp(mine, outputs[l], n) != 0)
            differ++;
        printf("%02u %-15s %s %4ux%3ux%-3u sum %lu%s\n", l, layer.name, layer.kind == CHIPQ_CONV3X3_RELU ? "conv" : "pool",
               layer.out_channels, layer.out_height, layer.out_width, sum,
               memcmp(mine, outputs[l], n) != 0 ? "  DIFFERS" : "");
    }
    out = fopen(argv[3], "wb");
    if (out == NULL || fwrite(outputs[info.layer_count - 1u], 1, chipq_output_bytes(model, info.layer_count - 1u), out) !=
                           chipq_output_bytes(model, info.layer_count - 1u) || fclose(out) != 0) {
        fprintf(stderr, "chipq_example: cannot write %s\n", argv[3]);
        return 2;
    }
    for (l = 0; l < info.layer_count; l++)
        free(outputs[l]);
    free(outputs);
    free(a);
    free(b);
    free(scratch);
    free(pixels);
    chipq_free(model);
    return differ ? 1 : 0;
}
