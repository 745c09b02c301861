/*
 * chipq_ref.c - the command-line C reference executor of chipq chip format v1 and v2 (uses chipq.h).
 *
 *     chipq_ref BLOB PIXELS.u8 OUTDIR     run one image, write every layer's output map
 *     chipq_ref --check BLOB...           only read and check blobs (several: one line each)
 *     chipq_ref --status-names            the library's status codes and names, one per line
 *
 * The library (chipq.c) implements formats/SPEC.md (shipped beside this file): the reader obligations
 * of section 5 and the arithmetic of section 4. PIXELS.u8 is the raw uint8 input buffer, C-order
 * (C, H, W), H x W the blob's input size and the planes in its channel order. For every layer l the
 * uint8 output map, C-order (C, H, W), is written to OUTDIR/<l:02d>_<name>.u8 (OUTDIR is created when
 * missing, not its parents; each file appears by a rename, so none is ever half-written under its name).
 *
 * The blob is hostile input. The file is read whole once its size passed the 2 GiB cap of SPEC 2. Any
 * failure prints one line, "chipq_ref: <ErrorType>: <message>", on stderr and exits with status 2; the
 * error types are those of chipq's Python reader (chipq.formats.errors). Exit status 0: done.
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

#include "chipq.h"

#define MAX_FILE_SIZE ((uint64_t)1 << 31)
#define EXIT_BAD 2

/* ---- failure: one line, exit 2 ------------------------------------------------------------------ */

/* Everything allocated hangs off this struct, so memory is still reachable when fail() exits. */
static struct {
    unsigned char *blob;    /* the file's bytes while they are read */
    unsigned char *pixels;
    chipq_model *model;
    void *scratch;
    unsigned char *map;     /* one layer's output at a time */
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

/* ---- reading ------------------------------------------------------------------------------------ */

static unsigned char *read_blob_file(const char *path, size_t *size_out)
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
    *size_out = (size_t)size;
    return G.blob;
}

/* Read and check a blob file (chipq_load: SPEC 5); the model is G.model. */
static void load_model(const char *path)
{
    size_t size;
    char message[512];
    int status;
    read_blob_file(path, &size);
    status = chipq_load(G.blob, size, &G.model, message, sizeof message);
    free(G.blob);
    G.blob = NULL;
    if (status != CHIPQ_OK)
        fail(chipq_status_name(status), "%s", message);
}

static void *alloc_or_fail(size_t bytes, const char *what)
{
    void *p = bytes == (size_t)-1 ? NULL : malloc(bytes > 0 ? bytes : 1u);
    if (p == NULL)
        fail("OutOfMemory", "cannot allocate %llu bytes for %s", (unsigned long long)bytes, what);
    return p;
}

/* ---- files -------------------------------------------------------------------------------------- */

static void read_pixels(const char *path, const chipq_model_info *m)
{
    size_t need = 3u * (size_t)m->input_height * m->input_width, got; /* <= 3 * 4096 * 4096 */
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
             got > need ? "more than" : "only", (unsigned long)(got > need ? need : got), m->input_height, m->input_width,
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

/* Every layer in turn (chipq_run_layer), each map written as soon as it is made. */
static void run(const char *outdir)
{
    chipq_model_info info;
    chipq_layer_info layer;
    unsigned index;
    size_t most = 0;
    unsigned char *prev;
    chipq_model_get_info(G.model, &info);
    for (index = 0; index < info.layer_count; index++)
        if (chipq_output_bytes(G.model, index) > most)
            most = chipq_output_bytes(G.model, index);
    G.scratch = alloc_or_fail(chipq_scratch_bytes(G.model), "the scratch memory");
    G.map = (unsigned char *)alloc_or_fail(2u * most, "two activation maps");
    prev = G.pixels;
    for (index = 0; index < info.layer_count; index++) {
        unsigned char *out = G.map + (index % 2u) * most;
        chipq_layer_get_info(G.model, index, &layer);
        chipq_run_layer(G.model, index, prev, out, G.scratch);
        write_map(outdir, index, layer.name, out, chipq_output_bytes(G.model, index));
        prev = out;
    }
}

static void usage(void)
{
    fail("UsageError", "usage: chipq_ref BLOB PIXELS.u8 OUTDIR | chipq_ref --check BLOB... | chipq_ref --status-names");
}

static void print_ok(const char *path)
{
    chipq_model_info info;
    chipq_model_get_info(G.model, &info);
    printf("%s: ok, %u layers, input %ux%u\n", path, info.layer_count, info.input_height, info.input_width);
}

/* --check with several blobs: one line each on stdout; exit 2 when any is refused. */
static int check_many(int count, char **paths)
{
    static int index, refused; /* static: unchanged by longjmp */
    for (index = 0; index < count; index++) {
        G.checking = paths[index];
        if (setjmp(G.next_blob) == 0) {
            load_model(paths[index]);
            print_ok(paths[index]);
        } else {
            refused++;
        }
        if (G.file != NULL)
            fclose(G.file);
        free(G.blob);
        chipq_free(G.model);
        G.file = NULL;
        G.blob = NULL;
        G.model = NULL;
    }
    G.checking = NULL;
    return refused > 0 ? EXIT_BAD : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--status-names") == 0) {
        int status;
        for (status = 0; status < CHIPQ_STATUS_COUNT; status++)
            printf("%d %s\n", status, chipq_status_name(status));
        return 0;
    }
    if (argc > 3 && strcmp(argv[1], "--check") == 0)
        return check_many(argc - 2, argv + 2);
    if (argc == 3 && strcmp(argv[1], "--check") == 0) {
        load_model(argv[2]);
        print_ok(argv[2]);
        chipq_free(G.model);
        return 0;
    }
    if (argc != 4 || argv[1][0] == '-')
        usage();
    load_model(argv[1]);
    {
        chipq_model_info info;
        chipq_model_get_info(G.model, &info);
        read_pixels(argv[2], &info);
        prepare_outdir(argv[3]);
        run(argv[3]);
        printf("%u layer outputs written to %s\n", info.layer_count, argv[3]);
    }
    free(G.scratch);
    free(G.map);
    free(G.pixels);
    chipq_free(G.model);
    return 0;
}
