/* Sieve's compiled thumbnail kernel: the 32x32 and 9x8 grey thumbnails behind phash and dhash,
 * equal byte for byte to Pillow 13's `image.convert("L").resize(size, Image.LANCZOS)`: of a
 * decoded image (sieve_thumbnails), or of a plain PNG straight from its inflated rows, without
 * a Pillow image (sieve_png_thumbnails: PNG's five row filters undone as Pillow's decoder does).
 *
 * Built by `python -m core.native` (the Makefile does it) into a shared library that
 * core/imageprobe.py loads with ctypes; without a C compiler Sieve computes the same bytes with
 * numpy, more slowly. No Python headers needed: plain C, called with the GIL released.
 *
 * Same arithmetic as Pillow's Resample.c and Convert.c:
 * - grey = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16 (ITU-R 601-2 luma, rgb2l);
 * - Lanczos-3 weights computed in double with libm's sin, normalised, then rounded to integers
 *   scaled by 2**22 (normalize_coeffs_8bpc); each pass sums integer products, adds half, shifts
 *   and clips to 0..255, the horizontal pass first (as Pillow does unless the height shrinks
 *   over twice as much as the width: then this kernel declines and the caller falls back).
 * Integer sums do not depend on the order of the additions, which is what lets this kernel
 * reorganise the work: the image is converted and transposed in blocks of ROWS rows (widened
 * to int32), so that the horizontal pass runs down the columns, every row of the block in one
 * vector of sums: about 0.28 ms for a 640x480 RGB image on one core of the development machine
 * (AMD EPYC, AVX-512), against 0.75 ms for the numpy path (bench/ingest_stages.py).
 * Build with -ffp-contract=off: a fused multiply-add would change the weights' last bits.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#ifndef M_PI
#define M_PI 3.14159265358979323846 /* as glibc's math.h, which Pillow's build uses */
#endif
#define SIEVE_THUMBNAILS_VERSION 2
#define PRECISION_BITS 22
#define ROWS 32    /* rows of the image per block: two vectors of 16 int32 sums */
#define MAX_OUT 32 /* outputs per axis */

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && \
    (!defined(__clang__) || __clang_major__ >= 14)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

int sieve_thumbnails_version(void) { return SIEVE_THUMBNAILS_VERSION; }

static inline uint8_t clip8(int32_t in) {
    if (in >= (1 << PRECISION_BITS << 8)) return 255;
    if (in <= 0) return 0;
    return (uint8_t)(in >> PRECISION_BITS);
}

/* ------------------------------------------------------------------ weights (Resample.c) */

typedef struct {
    int in_size, out_size, ksize;
    int32_t bounds[2 * MAX_OUT]; /* first input, number of taps */
    int32_t *k;                  /* out_size * ksize integer weights */
} Weights;

static double sinc_filter(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos_filter(double x) {
    if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
    return 0.0;
}

/* Pillow's precompute_coeffs and normalize_coeffs_8bpc for a box of the whole axis. */
static int make_weights(Weights *w, int in_size, int out_size) {
    double scale = (double)((float)in_size - 0.0f) / out_size, filterscale = scale;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = 3.0 * filterscale, ss = 1.0 / filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kk = malloc(sizeof(double) * (size_t)ksize);
    int32_t *k = calloc((size_t)out_size * (size_t)ksize, sizeof(int32_t));
    if (!kk || !k) {
        free(kk);
        free(k);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = 0.0 + (xx + 0.5) * scale, ww = 0.0;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double f = lanczos_filter((x + xmin - center + 0.5) * ss);
            kk[x] = f;
            ww += f;
        }
        for (int x = 0; x < xmax; x++) {
            if (ww != 0.0) kk[x] /= ww;
            k[(size_t)xx * ksize + x] = kk[x] < 0 ? (int32_t)(-0.5 + kk[x] * (1 << PRECISION_BITS))
                                                  : (int32_t)(0.5 + kk[x] * (1 << PRECISION_BITS));
        }
        w->bounds[2 * xx] = xmin;
        w->bounds[2 * xx + 1] = xmax;
    }
    free(kk);
    free(w->k);
    w->k = k;
    w->in_size = in_size;
    w->out_size = out_size;
    w->ksize = ksize;
    return 0;
}

static int weights_for(Weights *w, int in_size, int out_size) {
    if (w->k && w->in_size == in_size && w->out_size == out_size) return 0;
    return make_weights(w, in_size, out_size);
}

/* The weights of the last image size each thread saw (folders mostly hold one size), freed
 * when the thread ends: ingest starts new threads for every folder. */
typedef struct {
    Weights across32, across9, down32, down8; /* the blocked passes of big images */
    Weights h32, h9, v32, v8;                 /* the plain passes of small ones */
} ThreadWeights;

static pthread_key_t weights_key;
static pthread_once_t weights_once = PTHREAD_ONCE_INIT;
static int weights_key_made;

static void free_thread_weights(void *data) {
    ThreadWeights *t = data;
    free(t->across32.k);
    free(t->across9.k);
    free(t->down32.k);
    free(t->down8.k);
    free(t->h32.k);
    free(t->h9.k);
    free(t->v32.k);
    free(t->v8.k);
    free(t);
}

static void make_weights_key(void) {
    weights_key_made = pthread_key_create(&weights_key, free_thread_weights) == 0;
}

static ThreadWeights *thread_weights(void) {
    pthread_once(&weights_once, make_weights_key);
    if (!weights_key_made) return NULL;
    ThreadWeights *t = pthread_getspecific(weights_key);
    if (t) return t;
    t = calloc(1, sizeof *t);
    if (t && pthread_setspecific(weights_key, t) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

/* ------------------------------------------------------------------ the passes */

/* Rows y0 .. y0 + ROWS of the image as 8-bit grey, row after row (ROWS x width). */
VECTOR_CLONES
static void grey_rows(const uint8_t *pixels, int64_t row_bytes, int channels, int width,
                      int y0, int rows, uint8_t *grey) {
    for (int r = 0; r < rows; r++) {
        const uint8_t *src = pixels + (size_t)(y0 + r) * (size_t)row_bytes;
        uint8_t *out = grey + (size_t)r * width;
        if (channels == 1) {
            memcpy(out, src, (size_t)width);
            continue;
        }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        for (int x = 0; x < width; x++) { /* one 32-bit load a pixel: R, G, B, pad */
            uint32_t v;
            memcpy(&v, src + 4 * x, 4);
            out[x] = (uint8_t)(((v & 255) * 19595 + ((v >> 8) & 255) * 38470 +
                                ((v >> 16) & 255) * 7471 + 0x8000) >> 16);
        }
#else
        for (int x = 0; x < width; x++) {
            const uint8_t *p = src + 4 * x;
            out[x] = (uint8_t)((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
        }
#endif
    }
    if (rows < ROWS) memset(grey + (size_t)rows * width, 0, (size_t)(ROWS - rows) * width);
}

#if defined(__SSE2__)
/* 16 rows of 16 bytes (stride `in_stride`) → 16 columns of 16 int32 (stride `out_stride`). */
static void transpose16(const uint8_t *in, size_t in_stride, int32_t *out, size_t out_stride) {
    __m128i a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = _mm_loadu_si128((const __m128i *)(in + i * in_stride));
    for (int i = 0; i < 8; i++) {
        b[2 * i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[2 * i + 1] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            a[4 * i + j] = _mm_unpacklo_epi16(b[4 * i + j], b[4 * i + j + 2]);
            a[4 * i + j + 2] = _mm_unpackhi_epi16(b[4 * i + j], b[4 * i + j + 2]);
        }
    }
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 4; j++) {
            b[8 * i + j] = _mm_unpacklo_epi32(a[8 * i + j], a[8 * i + j + 4]);
            b[8 * i + j + 4] = _mm_unpackhi_epi32(a[8 * i + j], a[8 * i + j + 4]);
        }
    }
    for (int j = 0; j < 8; j++) {
        a[j] = _mm_unpacklo_epi64(b[j], b[j + 8]);
        a[j + 8] = _mm_unpackhi_epi64(b[j], b[j + 8]);
    }
    /* a[k] now holds one column of the tile: which one follows from the unpack order */
    static const int column[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
    const __m128i zero = _mm_setzero_si128();
    for (int k = 0; k < 16; k++) {
        __m128i lo = _mm_unpacklo_epi8(a[k], zero), hi = _mm_unpackhi_epi8(a[k], zero);
        __m128i *to = (__m128i *)(out + column[k] * out_stride);
        _mm_storeu_si128(to, _mm_unpacklo_epi16(lo, zero));
        _mm_storeu_si128(to + 1, _mm_unpackhi_epi16(lo, zero));
        _mm_storeu_si128(to + 2, _mm_unpacklo_epi16(hi, zero));
        _mm_storeu_si128(to + 3, _mm_unpackhi_epi16(hi, zero));
    }
}
#endif

/* grey (ROWS x width, row after row) → cols (width x ROWS, column after column). */
static void transpose_block(const uint8_t *grey, int width, int32_t *cols) {
    int x0 = 0;
#if defined(__SSE2__)
    for (; x0 + 16 <= width; x0 += 16)
        for (int r0 = 0; r0 < ROWS; r0 += 16)
            transpose16(grey + (size_t)r0 * width + x0, (size_t)width,
                        cols + (size_t)x0 * ROWS + r0, ROWS);
#endif
    for (int x = x0; x < width; x++)
        for (int r = 0; r < ROWS; r++) cols[(size_t)x * ROWS + r] = grey[(size_t)r * width + x];
}

/* One block's horizontal pass: for each output column, every row of the block at once. */
VECTOR_CLONES
static void across(const int32_t *cols, const Weights *w, uint8_t *tmp, int stride, int col0,
                   int rows) {
    for (int i = 0; i < w->out_size; i++) {
        int32_t acc[ROWS];
        for (int r = 0; r < ROWS; r++) acc[r] = 1 << (PRECISION_BITS - 1);
        const int32_t *k = w->k + (size_t)i * w->ksize;
        const int32_t *c = cols + (size_t)w->bounds[2 * i] * ROWS;
        for (int t = 0; t < w->bounds[2 * i + 1]; t++, c += ROWS) {
            int32_t weight = k[t];
            for (int r = 0; r < ROWS; r++) acc[r] += c[r] * weight;
        }
        for (int r = 0; r < rows; r++) tmp[(size_t)r * stride + col0 + i] = clip8(acc[r]);
    }
}

/* The vertical pass over columns col0 .. col0 + nx of tmp (height x stride). */
static void down(const uint8_t *tmp, int stride, int col0, int nx, const Weights *w,
                 uint8_t *out) {
    for (int yy = 0; yy < w->out_size; yy++) {
        int32_t acc[MAX_OUT];
        for (int x = 0; x < nx; x++) acc[x] = 1 << (PRECISION_BITS - 1);
        const int32_t *k = w->k + (size_t)yy * w->ksize;
        int first = w->bounds[2 * yy];
        for (int t = 0; t < w->bounds[2 * yy + 1]; t++) {
            const uint8_t *row = tmp + (size_t)(first + t) * stride + col0;
            for (int x = 0; x < nx; x++) acc[x] += row[x] * k[t];
        }
        for (int x = 0; x < nx; x++) out[yy * nx + x] = clip8(acc[x]);
    }
}

static int vertical_first(int height, int width, int out_w, int out_h) {
    int across_gain = 2 * (width - out_w);
    return height - out_h > (across_gain > 0 ? across_gain : 0);
}

/* The 32x32 (out32, 1024 bytes) and 9x8 (out9x8, 72 bytes, 9 wide) grey thumbnails of an image
 * of `height` rows of `row_bytes` bytes: `channels` 1 (grey) or 4 (Pillow's RGB: R, G, B, pad).
 * Returns 0; -1 when memory runs out; -2 for a size this kernel leaves to the caller (32 pixels
 * or fewer on a side, or a height that shrinks over twice as much as the width: Pillow then
 * resizes vertically first); -3 for another number of channels. */
int sieve_thumbnails(const uint8_t *pixels, int64_t row_bytes, int channels, int height,
                     int width, uint8_t *out32, uint8_t *out9x8) {
    if (channels != 1 && channels != 4) return -3;
    if (width <= 32 || height <= 32 || vertical_first(height, width, 32, 32) ||
        vertical_first(height, width, 9, 8))
        return -2;
    ThreadWeights *t = thread_weights();
    if (!t || weights_for(&t->across32, width, 32) || weights_for(&t->across9, width, 9) ||
        weights_for(&t->down32, height, 32) || weights_for(&t->down8, height, 8))
        return -1;
    const int stride = 32 + 9; /* tmp: per row, the 32 outputs then the 9 */
    uint8_t *grey = malloc((size_t)ROWS * width);
    int32_t *cols = malloc(sizeof(int32_t) * ROWS * (size_t)width);
    uint8_t *tmp = malloc((size_t)height * stride);
    if (!grey || !cols || !tmp) {
        free(grey);
        free(cols);
        free(tmp);
        return -1;
    }
    for (int y0 = 0; y0 < height; y0 += ROWS) {
        int rows = height - y0 < ROWS ? height - y0 : ROWS;
        grey_rows(pixels, row_bytes, channels, width, y0, rows, grey);
        transpose_block(grey, width, cols);
        across(cols, &t->across32, tmp + (size_t)y0 * stride, stride, 0, rows);
        across(cols, &t->across9, tmp + (size_t)y0 * stride, stride, 32, rows);
    }
    down(tmp, stride, 0, 32, &t->down32, out32);
    down(tmp, stride, 32, 9, &t->down8, out9x8);
    free(grey);
    free(cols);
    free(tmp);
    return 0;
}

/* ------------------------------------------------------------------ small images, PNG rows */

/* Pillow's resize of a grey image (width x height) to out_w x out_h, pass by pass in its
 * order; plain loops, for images small enough that the blocked passes would not pay. */
static int resize_plain(const uint8_t *grey, int width, int height, int out_w, int out_h,
                        Weights *wh, Weights *wv, uint8_t *out) {
    int need_h = out_w != width, need_v = out_h != height;
    if ((need_h && weights_for(wh, width, out_w)) || (need_v && weights_for(wv, height, out_h)))
        return -1;
    /* the first of two passes gives out_w x height or width x out_h pixels */
    size_t across_first = (size_t)out_w * height, down_first = (size_t)width * out_h;
    uint8_t *mid = malloc(across_first > down_first ? across_first : down_first);
    if (!mid) return -1;
    const uint8_t *in = grey;
    int w = width, h = height;
    int order[2] = {0, 1}; /* 0: horizontal, 1: vertical */
    if (vertical_first(height, width, out_w, out_h)) {
        order[0] = 1;
        order[1] = 0;
    }
    uint8_t *step_out[2];
    int passes = need_h + need_v, done = 0;
    step_out[0] = passes == 2 ? mid : out;
    step_out[1] = out;
    for (int n = 0; n < 2; n++) {
        uint8_t *to = step_out[done];
        if (order[n] == 0 && need_h) {
            for (int y = 0; y < h; y++)
                for (int i = 0; i < out_w; i++) {
                    const int32_t *k = wh->k + (size_t)i * wh->ksize;
                    const uint8_t *x = in + (size_t)y * w + wh->bounds[2 * i];
                    int32_t acc = 1 << (PRECISION_BITS - 1);
                    for (int t = 0; t < wh->bounds[2 * i + 1]; t++) acc += x[t] * k[t];
                    to[(size_t)y * out_w + i] = clip8(acc);
                }
            in = to, w = out_w, done++;
        } else if (order[n] == 1 && need_v) {
            for (int yy = 0; yy < out_h; yy++) {
                const int32_t *k = wv->k + (size_t)yy * wv->ksize;
                int first = wv->bounds[2 * yy];
                for (int x = 0; x < w; x++) {
                    int32_t acc = 1 << (PRECISION_BITS - 1);
                    for (int t = 0; t < wv->bounds[2 * yy + 1]; t++)
                        acc += in[(size_t)(first + t) * w + x] * k[t];
                    to[(size_t)yy * w + x] = clip8(acc);
                }
            }
            in = to, h = out_h, done++;
        }
    }
    if (!passes) memcpy(out, grey, (size_t)width * height);
    free(mid);
    return 0;
}

static inline int paeth(int a, int b, int c) {
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c); /* |p - a|, |p - b|, |p - c| */
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* One PNG row undone: `in` filtered with `filter`, `prior` the row above (zeros for the first),
 * `bpp` bytes a pixel. Returns 0, or -5 for a filter type PNG does not define. */
static int unfilter(int filter, const uint8_t *in, const uint8_t *prior, uint8_t *row,
                    int64_t line, int bpp) {
    int64_t x;
    switch (filter) {
    case 0:
        memcpy(row, in, (size_t)line);
        return 0;
    case 1:
        memcpy(row, in, (size_t)bpp);
        for (x = bpp; x < line; x++) row[x] = (uint8_t)(in[x] + row[x - bpp]);
        return 0;
    case 2:
        for (x = 0; x < line; x++) row[x] = (uint8_t)(in[x] + prior[x]);
        return 0;
    case 3:
        for (x = 0; x < bpp; x++) row[x] = (uint8_t)(in[x] + (prior[x] >> 1));
        for (; x < line; x++) row[x] = (uint8_t)(in[x] + ((row[x - bpp] + prior[x]) >> 1));
        return 0;
    case 4:
        for (x = 0; x < bpp; x++) row[x] = (uint8_t)(in[x] + prior[x]); /* a = c = 0: b */
        for (; x < line; x++)
            row[x] = (uint8_t)(in[x] + paeth(row[x - bpp], prior[x], prior[x - bpp]));
        return 0;
    default:
        return -5;
    }
}

/* The rows of a plain PNG (8 bits a sample, not interlaced) as zlib inflates them, a filter
 * byte then width * channels bytes each, to their 32x32 (out32) and 9x8 (out9x8) grey
 * thumbnails, as Pillow decodes, converts to "L" and resizes them. `channels`: 1 (L) or 3
 * (RGB). Returns 0; -1 when memory runs out; -3 for another number of channels; -4 when `raw`
 * is not exactly the rows' size; -5 for a filter type PNG does not define (Pillow refuses the
 * file). On any of these the caller lets Pillow read the file. */
int sieve_png_thumbnails(const uint8_t *raw, int64_t raw_len, int channels, int height,
                         int width, uint8_t *out32, uint8_t *out9x8) {
    if (channels != 1 && channels != 3) return -3;
    if (width <= 0 || height <= 0) return -4;
    int64_t line = (int64_t)width * channels;
    if (raw_len != (int64_t)height * (line + 1)) return -4;
    uint8_t *rows = malloc((size_t)(height * line)), *grey = malloc((size_t)width * height);
    uint8_t *zeros = calloc((size_t)line, 1); /* the row above the first */
    if (!rows || !grey || !zeros) {
        free(rows);
        free(grey);
        free(zeros);
        return -1;
    }
    int status = 0;
    for (int y = 0; y < height && !status; y++) {
        const uint8_t *in = raw + y * (line + 1);
        uint8_t *row = rows + y * line;
        status = unfilter(in[0], in + 1, y ? row - line : zeros, row, line, channels);
    }
    if (!status) {
        for (int64_t k = 0; k < (int64_t)width * height; k++) {
            const uint8_t *p = rows + k * channels;
            grey[k] = channels == 1 ? p[0]
                                    : (uint8_t)((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 +
                                                 0x8000) >> 16);
        }
        status = sieve_thumbnails(grey, width, 1, height, width, out32, out9x8);
        if (status == -2) { /* small, or much taller than wide: the plain passes */
            ThreadWeights *t = thread_weights();
            status = !t || resize_plain(grey, width, height, 32, 32, &t->h32, &t->v32, out32) ||
                             resize_plain(grey, width, height, 9, 8, &t->h9, &t->v8, out9x8)
                         ? -1
                         : 0;
        }
    }
    free(rows);
    free(grey);
    free(zeros);
    return status;
}
