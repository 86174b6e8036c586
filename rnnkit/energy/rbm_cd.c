/* Contrastive divergence for a Bernoulli RBM on the CPU: S minibatch updates in one call.

   The specification is the torch loop in rbm_train.py (cd_gradient_from_noise, apply_update): same
   algorithm, same noise, same order of random numbers. It exists because a minibatch of 10 digits
   is a few hundred numbers: torch then spends ~5 us per operation on dispatch, a step needs ~20
   operations, and scikit-learn's numpy loop is faster than that.

   Step s, with v0 = X[s] (B rows) and Bc chain rows:
       ph0 = σ(b + v0 Wᵀ)
       CD:  h = [U0[s] < ph0]                  PCD: h = chain
       k times:  v = [u_v < σ(c + h W)],  ph = σ(b + v Wᵀ),  h = [u_h < ph]
       G = ph0ᵀ v0 / B - phᵀ v / Bc,   gb = mean(ph0) - mean(ph),   gc = mean(v0) - mean(v)
       m = momentum m + lr (g - decay x),  x += m       for x = W (with decay), b, c (without)
       PCD: chain = h
   Noise per step: U0[s] (B*H) for CD only; U[s][t] = [u_v (Bc*V), u_h (Bc*H)] for t < k.
   Layout: W (H, V) row-major; Wᵀ (V, H) is kept beside it so that both products run along rows.
   Build: cc -O3 -march=native -ffast-math -fPIC -c, then cc -shared (see _rbm_kernel.py). */

#include <math.h>
#include <string.h>

#define R restrict
#define T 16 /* columns per register tile */

typedef float vec __attribute__((vector_size(T * sizeof(float))));
static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }

/* rows r..r+RB-1 of out (., N) += alpha * A @ M, with A(r, k) = A[r*ars + k*aks] and M (K, N).
   RB is a constant after inlining: the RB accumulators stay in registers, each load of M feeds RB. */
static inline __attribute__((always_inline)) void gemm_rows(float *R out, const float *R A, long ars, long aks,
                                                            const float *R M, float alpha, int r, int K, int N,
                                                            const int RB) {
    int i0 = 0;
    for (; i0 + T <= N; i0 += T) {
        vec acc[RB];
        for (int q = 0; q < RB; q++) acc[q] = (vec){0};
        for (int k = 0; k < K; k++) {
            vec m = load(M + (long)k * N + i0);
            for (int q = 0; q < RB; q++) acc[q] += A[(r + q) * ars + k * aks] * m;
        }
        for (int q = 0; q < RB; q++) {
            float *o = out + (long)(r + q) * N + i0;
            store(o, load(o) + alpha * acc[q]);
        }
    }
    for (; i0 < N; i0++) /* the last N % T columns */
        for (int q = 0; q < RB; q++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++) s += A[(r + q) * ars + k * aks] * M[(long)k * N + i0];
            out[(long)(r + q) * N + i0] += alpha * s;
        }
}

static void gemm(float *R out, const float *R A, long ars, long aks, const float *R M, float alpha, int rows,
                 int K, int N) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) gemm_rows(out, A, ars, aks, M, alpha, r, K, N, 4);
    for (; r < rows; r++) gemm_rows(out, A, ars, aks, M, alpha, r, K, N, 1);
}

static void fill_rows(float *R out, const float *R row, int rows, int N) {
    for (int r = 0; r < rows; r++) memcpy(out + (long)r * N, row, sizeof(float) * N);
}

/* σ(x) = 1 / (1 + e^-x), x clamped to [-80, 80] first: under -ffast-math the vectorised expf has no overflow
   path (e^96 came out NaN, not inf, and the weights with it), and at ±80 σ is 1 or 1.8e-35 in float32 anyway. */
static void sigmoid(float *R x, long n) {
    for (long a = 0; a < n; a++) x[a] = 1.0f / (1.0f + expf(-fminf(fmaxf(x[a], -80.0f), 80.0f)));
}

static void sample(const float *R p, const float *R u, float *R x, long n) {
    for (long a = 0; a < n; a++) x[a] = u[a] < p[a] ? 1.0f : 0.0f;
}

static void sample_in_place(float *R p, const float *R u, long n) {
    for (long a = 0; a < n; a++) p[a] = u[a] < p[a] ? 1.0f : 0.0f;
}

static void transpose(float *R dst, const float *R src, int rows, int cols) {
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) dst[(long)c * rows + r] = src[(long)r * cols + c];
}

static void add_column_means(float *R out, const float *R x, float scale, int rows, int D) {
    for (int n = 0; n < rows; n++)
        for (int d = 0; d < D; d++) out[d] += scale * x[(long)n * D + d];
}

static void momentum_step(float *R x, float *R m, const float *R g, long n, float lr, float momentum, float decay) {
    for (long a = 0; a < n; a++) {
        m[a] = momentum * m[a] + lr * (g[a] - decay * x[a]);
        x[a] += m[a];
    }
}

/* hidden probabilities P (rows, H) = σ(b + v Wᵀ) */
static void hidden_probs(float *P, const float *v, const float *WT, const float *b, int rows, int V, int H) {
    fill_rows(P, b, rows, H);
    gemm(P, v, V, 1, WT, 1.0f, rows, V, H);
    sigmoid(P, (long)rows * H);
}

long rbm_cd_work_size(int B, int Bc, int V, int H) {
    return 2L * V * H + (long)B * H + (long)Bc * H + (long)Bc * V + H + V;
}

void rbm_cd_pass(float *W, float *b, float *c, float *mW, float *mb, float *mc, const float *X, const float *U0,
                 const float *U, float *chain, float *work, int S, int B, int Bc, int V, int H, int k,
                 float lr, float momentum, float decay) {
    float *WT = work, *G = WT + (long)V * H, *ph0 = G + (long)V * H, *ph = ph0 + (long)B * H;
    float *v = ph + (long)Bc * H, *gb = v + (long)Bc * V, *gc = gb + H;
    transpose(WT, W, H, V);
    for (int s = 0; s < S; s++) {
        const float *v0 = X + (long)s * B * V;
        hidden_probs(ph0, v0, WT, b, B, V, H);
        if (U0) sample(ph0, U0 + (long)s * B * H, chain, (long)B * H);
        for (int t = 0; t < k; t++) {
            const float *u = U + ((long)s * k + t) * Bc * (V + H);
            fill_rows(v, c, Bc, V);
            gemm(v, chain, H, 1, W, 1.0f, Bc, H, V);
            sigmoid(v, (long)Bc * V);
            sample_in_place(v, u, (long)Bc * V);
            hidden_probs(ph, v, WT, b, Bc, V, H);
            sample(ph, u + (long)Bc * V, chain, (long)Bc * H);
        }
        memset(G, 0, sizeof(float) * (long)V * H);
        memset(gb, 0, sizeof(float) * (H + V));
        gemm(G, ph0, 1, H, v0, 1.0f / B, H, B, V); /* G (H, V) = ph0ᵀ v0 / B */
        gemm(G, ph, 1, H, v, -1.0f / Bc, H, Bc, V); /*          - phᵀ v / Bc */
        add_column_means(gb, ph0, 1.0f / B, B, H);
        add_column_means(gb, ph, -1.0f / Bc, Bc, H);
        add_column_means(gc, v0, 1.0f / B, B, V);
        add_column_means(gc, v, -1.0f / Bc, Bc, V);
        momentum_step(W, mW, G, (long)V * H, lr, momentum, decay);
        momentum_step(b, mb, gb, H, lr, momentum, 0.0f);
        momentum_step(c, mc, gc, V, lr, momentum, 0.0f);
        transpose(WT, W, H, V);
    }
}
