/*
 * Exact Hamming-radius search over fixed-width binary codes (PDQ: 4 x 64 bits; pHash and
 * dHash: 1 x 64 bits), for hashes/index/. Plain C with no Python API: it is loaded with
 * ctypes, works on arrays that numpy (often a memory-mapped snapshot) owns, and never
 * allocates memory that outlives a call.
 *
 * Why a kernel of our own: at 10 million PDQ hashes a brute-force scan is bound by memory
 * bandwidth (~10 ms per query on two cores), and faiss's multi-index hash keeps its
 * candidates in a std::unordered_set whose speed depends on the allocator. Multi-index
 * hashing (Norouzi et al.) over 16-bit chunks touches ~40k candidates per query instead
 * of 10 million rows; done in C with a flat CSR layout it needs no allocation per
 * candidate. See docs/matching.md.
 *
 * The index: a code of W 64-bit words is cut into m = 4W chunks of 16 bits. For each
 * chunk j, offsets[j][v] .. offsets[j][v+1] delimit the rows (in postings[j]) whose chunk
 * j equals v. A query within radius r probes, in chunk j, every value within tau_j bits
 * of the query's chunk; by the pigeonhole principle any code within r differs in some
 * chunk j by at most tau_j as long as sum_j (tau_j + 1) >= r + 1 (tau_j = -1 skips a
 * chunk). Every candidate is then checked at full width, so the answer is exactly a
 * brute-force scan's. A match found through chunk j is dropped when an earlier chunk
 * also probes it, so each row is reported once.
 *
 * A planner sums the sizes of the buckets a query would probe (exactly, from the
 * offsets) before it reads any candidate, and scans all rows instead when that costs
 * less: skewed data (families of near-duplicates, correlated bits) and large radii
 * degrade to the brute-force cost, never beyond it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HX_ABI_VERSION 2
#define NVALS 65536u
#define MAX_TAU 3
#define MAX_CHUNKS 64
#define PREFETCH_AHEAD 16

typedef struct {
    const uint64_t *codes;    /* n rows of `words` words */
    uint64_t n;
    int32_t words;
    int32_t chunks;           /* 4 * words; 0 when there is no MIH (brute force only) */
    const uint32_t *offsets;  /* chunks * (NVALS + 1) */
    const uint32_t *postings; /* chunks * n */
} hx_index;

typedef struct {
    uint32_t *query; /* which query (index in the batch) */
    uint32_t *row;   /* which row of the index */
    uint16_t *dist;  /* its Hamming distance */
    uint64_t cap;    /* room in the three arrays */
    uint64_t len;    /* results found; may exceed cap, then only cap were written */
} hx_out;

/* Masks of 16 bits ordered by popcount: 1 + 16 + 120 + 560 for popcounts 0..3. */
static uint16_t masks[697];
static int mask_end[MAX_TAU + 1];

int hx_abi_version(void) { return HX_ABI_VERSION; }

void hx_init(void) {
    int k = 0;
    for (int pop = 0; pop <= MAX_TAU; pop++) {
        for (uint32_t v = 0; v < NVALS; v++) {
            if (__builtin_popcount(v) == pop) masks[k++] = (uint16_t)v;
        }
        mask_end[pop] = k;
    }
}

static inline uint32_t chunk_of(const uint64_t *code, int j) {
    return (uint32_t)((code[j >> 2] >> ((j & 3) * 16)) & 0xFFFFu);
}

static inline int distance(const uint64_t *a, const uint64_t *b, int w) {
    if (w == 4) {
        return __builtin_popcountll(a[0] ^ b[0]) + __builtin_popcountll(a[1] ^ b[1]) +
               __builtin_popcountll(a[2] ^ b[2]) + __builtin_popcountll(a[3] ^ b[3]);
    }
    if (w == 1) return __builtin_popcountll(a[0] ^ b[0]);
    int d = 0;
    for (int k = 0; k < w; k++) d += __builtin_popcountll(a[k] ^ b[k]);
    return d;
}

static inline void emit(hx_out *out, uint32_t query, uint64_t row, int dist) {
    if (out->len < out->cap) {
        out->query[out->len] = query;
        out->row[out->len] = (uint32_t)row;
        out->dist[out->len] = (uint16_t)dist;
    }
    out->len++;
}

/* Build the chunk tables of `n` codes: a counting sort per chunk. */
int hx_build(const uint64_t *codes, uint64_t n, int32_t words, uint32_t *offsets, uint32_t *postings) {
    int m = words * 4;
    uint32_t *cursor = malloc(sizeof(uint32_t) * NVALS);
    if (cursor == NULL) return -1;
    for (int j = 0; j < m; j++) {
        uint32_t *off = offsets + (size_t)j * (NVALS + 1);
        uint32_t *post = postings + (size_t)j * n;
        memset(off, 0, sizeof(uint32_t) * (NVALS + 1));
        for (uint64_t i = 0; i < n; i++) off[chunk_of(codes + i * words, j) + 1]++;
        for (uint32_t v = 0; v < NVALS; v++) off[v + 1] += off[v];
        memcpy(cursor, off, sizeof(uint32_t) * NVALS);
        for (uint64_t i = 0; i < n; i++) post[cursor[chunk_of(codes + i * words, j)]++] = (uint32_t)i;
    }
    free(cursor);
    return 0;
}

/* Every row within r of one query, by reading all rows. Returns the rows read. */
static uint64_t scan_one(const hx_index *ix, const uint64_t *q, int r, uint32_t qi, hx_out *out) {
    const int w = ix->words;
    const uint64_t *c = ix->codes;
    for (uint64_t i = 0; i < ix->n; i++, c += w) {
        int d = distance(c, q, w);
        if (d <= r) emit(out, qi, i, d);
    }
    return ix->n;
}

static inline uint64_t bucket_sum(const uint32_t *off, uint32_t qv, int from, int to) {
    uint64_t s = 0;
    for (int k = from; k < to; k++) {
        uint32_t v = qv ^ masks[k];
        s += off[v + 1] - off[v];
    }
    return s;
}

typedef struct {
    uint32_t *buf;
    uint64_t cap;
} scratch_t;

/*
 * One query. Steps: plan the probe radius of each chunk; if the buckets to read hold more
 * rows than n / brute_div, scan everything instead; else gather each chunk's candidates,
 * check them at full width (prefetching ahead, as they are random reads), and drop the
 * matches an earlier chunk also probes. Returns the candidates checked, or -1 when out
 * of memory; *brute says whether it scanned.
 */
static int64_t search_one(const hx_index *ix, const uint64_t *q, int r, uint32_t brute_div, uint32_t qi,
                          hx_out *out, scratch_t *scratch, uint8_t *brute) {
    *brute = 0;
    if (r < 0 || ix->n == 0) return 0;
    const int m = ix->chunks;
    const int w = ix->words;
    int tau[MAX_CHUNKS];
    uint64_t count[MAX_CHUNKS];
    if (m <= 0 || ix->offsets == NULL) {
        *brute = 1;
        return (int64_t)scan_one(ix, q, r, qi, out);
    }
    const int budget = r + 1;
    const int lo = budget / m - 1;     /* the radius of every chunk... */
    const int extra = budget % m;      /* ...plus one for this many chunks */
    const int maxtau = extra ? lo + 1 : lo;
    if (maxtau > MAX_TAU) {
        *brute = 1;
        return (int64_t)scan_one(ix, q, r, qi, out);
    }
    uint64_t est = 0;
    uint64_t inc[MAX_CHUNKS];
    for (int j = 0; j < m; j++) {
        const uint32_t *off = ix->offsets + (size_t)j * (NVALS + 1);
        uint32_t qv = chunk_of(q, j);
        tau[j] = lo;
        count[j] = lo >= 0 ? bucket_sum(off, qv, 0, mask_end[lo]) : 0;
        inc[j] = extra ? bucket_sum(off, qv, lo >= 0 ? mask_end[lo] : 0, mask_end[lo + 1]) : 0;
    }
    /* The chunks that get the larger radius are those where it adds the fewest rows. */
    for (int e = 0; e < extra; e++) {
        int best = -1;
        for (int j = 0; j < m; j++) {
            if (tau[j] == lo && (best < 0 || inc[j] < inc[best])) best = j;
        }
        tau[best] = lo + 1;
        count[best] += inc[best];
    }
    for (int j = 0; j < m; j++) est += count[j];
    if (brute_div > 0 && est * (uint64_t)brute_div > ix->n) {
        *brute = 1;
        return (int64_t)scan_one(ix, q, r, qi, out);
    }
    for (int j = 0; j < m; j++) {
        if (tau[j] < 0 || count[j] == 0) continue;
        if (count[j] > scratch->cap) {
            uint64_t cap = count[j] * 2;
            uint32_t *grown = realloc(scratch->buf, sizeof(uint32_t) * cap);
            if (grown == NULL) return -1;
            scratch->buf = grown;
            scratch->cap = cap;
        }
        const uint32_t *off = ix->offsets + (size_t)j * (NVALS + 1);
        const uint32_t *post = ix->postings + (size_t)j * ix->n;
        const uint32_t qv = chunk_of(q, j);
        uint32_t *rows = scratch->buf;
        uint64_t k = 0;
        for (int mi = 0; mi < mask_end[tau[j]]; mi++) {
            uint32_t v = qv ^ masks[mi];
            uint32_t s = off[v], e = off[v + 1];
            memcpy(rows + k, post + s, sizeof(uint32_t) * (e - s));
            k += e - s;
        }
        for (uint64_t i = 0; i < k; i++) {
            if (i + PREFETCH_AHEAD < k) __builtin_prefetch(ix->codes + (size_t)rows[i + PREFETCH_AHEAD] * w);
            const uint64_t *c = ix->codes + (size_t)rows[i] * w;
            int d = distance(c, q, w);
            if (d > r) continue;
            int seen = 0;
            for (int e = 0; e < j && !seen; e++) {
                if (tau[e] >= 0 && __builtin_popcount(chunk_of(c, e) ^ chunk_of(q, e)) <= tau[e]) seen = 1;
            }
            if (!seen) emit(out, qi, rows[i], d);
        }
    }
    return (int64_t)est;
}

/*
 * nq queries (nq rows of `words` words) within radius r. Results go to `out` in query
 * order. When a query's results do not fit, its partial results are dropped and the call
 * returns early: the caller grows the arrays and calls again from that query, so no
 * query is searched twice unless it alone overflows. candidates[i] and brute[i] (either
 * may be NULL) say what query i cost. Returns how many queries were answered (nq when
 * all were), or -1 when out of memory.
 */
int64_t hx_search(const hx_index *ix, const uint64_t *queries, uint32_t nq, int32_t r, uint32_t brute_div,
                  hx_out *out, uint64_t *candidates, uint8_t *brute) {
    scratch_t scratch = {NULL, 0};
    int64_t answered = nq;
    for (uint32_t i = 0; i < nq; i++) {
        uint8_t b = 0;
        const uint64_t before = out->len;
        int64_t cost = search_one(ix, queries + (size_t)i * ix->words, r, brute_div, i, out, &scratch, &b);
        if (cost < 0) {
            answered = -1;
            break;
        }
        if (out->len > out->cap) {
            out->len = before;
            answered = i;
            break;
        }
        if (candidates) candidates[i] = (uint64_t)cost;
        if (brute) brute[i] = b;
    }
    free(scratch.buf);
    return answered;
}

/*
 * Brute force for many queries at once: rows are read in blocks that stay in cache
 * while every query is compared with them, so memory is read once per batch instead of
 * once per query. Results come grouped by block, not by query.
 */
int hx_scan(const hx_index *ix, const uint64_t *queries, uint32_t nq, int32_t r, hx_out *out) {
    const int w = ix->words;
    const uint64_t block = 8192;
    if (r < 0) return 0;
    for (uint64_t start = 0; start < ix->n; start += block) {
        uint64_t end = start + block < ix->n ? start + block : ix->n;
        for (uint32_t qi = 0; qi < nq; qi++) {
            const uint64_t *q = queries + (size_t)qi * w;
            const uint64_t *c = ix->codes + start * w;
            for (uint64_t i = start; i < end; i++, c += w) {
                int d = distance(c, q, w);
                if (d <= r) emit(out, qi, i, d);
            }
        }
    }
    return 0;
}
