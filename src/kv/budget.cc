#include "kv/budget.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kv/topk.h"

namespace fkv {

int floor_mul(int n, double r) { return static_cast<int>(std::floor(static_cast<double>(n) * r)); }

int pyramid_capacity(int capacity, int window, int beta, int n_layers, int layer) {
  FKV_CHECK(capacity > window && beta > 0, "pyramid: C=%d W=%d beta=%d", capacity, window, beta);
  if (n_layers <= 1) return capacity;
  const int min_num = (capacity - window) / beta;
  const int max_num = 2 * (capacity - window) - min_num;
  return window + max_num - layer * (max_num - min_num) / (n_layers - 1);
}

std::vector<int> adakv_caps(std::span<const float> s_kv, int n_kv_heads, int m, int per_head,
                            double alpha) {
  FKV_CHECK(static_cast<int64_t>(s_kv.size()) == static_cast<int64_t>(n_kv_heads) * m,
            "adakv: scores %zu != %d x %d", s_kv.size(), n_kv_heads, m);
  const int budget = n_kv_heads * per_head;
  // Flattened index g*m + j: the shared tie rule gives "lower head, then lower position".
  std::vector<int32_t> flat;
  top_k(s_kv, budget, flat);
  std::vector<int> raw(n_kv_heads, 0);
  for (int32_t f : flat) ++raw[f / m];
  std::vector<int> caps(n_kv_heads);
  std::vector<double> frac(n_kv_heads);
  int total = 0;
  for (int g = 0; g < n_kv_heads; ++g) {
    const double x = raw[g] * (1.0 - alpha) + alpha * per_head;
    caps[g] = static_cast<int>(std::floor(x));
    frac[g] = x - caps[g];
    total += caps[g];
  }
  std::vector<int> order(n_kv_heads);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return frac[a] > frac[b]; });
  for (int t = 0; total < budget && t < n_kv_heads; ++t) {
    if (caps[order[t]] < m) {
      ++caps[order[t]];
      ++total;
    }
  }
  return caps;
}

namespace {
int known_layer(const std::string& name, int llama, int ministral, int nemo) {
  if (name.find("Llama-3.1-8B") != std::string::npos) return llama;
  if (name.find("Ministral-8B") != std::string::npos) return ministral;
  if (name.find("Mistral-Nemo") != std::string::npos) return nemo;
  return -1;
}
}  // namespace

int default_tsp_layer(const PolicyModelInfo& model) {
  const int known = known_layer(model.model_name, 15, 17, 19);
  if (known >= 0 && known < model.n_layers) return known;
  const int l = static_cast<int>(std::lround(15.0 / 32.0 * model.n_layers));
  return std::clamp(l, 0, std::max(0, model.n_layers - 2));
}

int default_filter_layer(const PolicyModelInfo& model) {
  const int known = known_layer(model.model_name, 13, 17, 19);
  if (known >= 0 && known < model.n_layers) return known;
  const int l = static_cast<int>(std::lround(13.0 / 32.0 * model.n_layers));
  return std::clamp(l, 0, std::max(0, model.n_layers - 1));
}

}  // namespace fkv
