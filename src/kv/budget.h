// Budgeters: how many rows each layer / head keeps (spec FASTKV.md §3, §4), and the default
// TSP / filter layers. Pure integer/double arithmetic so the NumPy reference can restate it.
#pragma once

#include <span>
#include <vector>

#include "kv/policy.h"

namespace fkv {

// floor(n * r) computed in double, as the reference's int(n * r).
int floor_mul(int n, double r);

// PyramidKV (spec §4): average capacity C, window W, beta; layer l of L:
//   min = (C-W)/beta, max = 2(C-W) - min, C_l = W + max - floor(l*(max-min)/(L-1)).
// Integer division throughout; L == 1 gives C. Requires C > W.
int pyramid_capacity(int capacity, int window, int beta, int n_layers, int layer);

// AdaKV (spec §4): per_head = C-W, B = n_kv_heads*per_head. A layer-wide top-B over all heads'
// scores (s_kv: [n_kv_heads, m], ties -> lower head, then lower position) gives raw counts c_g;
// then c_g*(1-alpha) + alpha*per_head, rounded by largest remainder so the sum stays exactly B
// (ties in the remainder -> lower head). Each result is <= m.
std::vector<int> adakv_caps(std::span<const float> s_kv, int n_kv_heads, int m, int per_head,
                            double alpha);

// Paper layers for known models, else round(15/32 * L) clamped to [0, L-2] (for L >= 2).
int default_tsp_layer(const PolicyModelInfo& model);
// GemFilter: paper layers for known models, else round(13/32 * L) clamped to [0, L-1].
int default_filter_layer(const PolicyModelInfo& model);

}  // namespace fkv
