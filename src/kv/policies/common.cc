#include "kv/policies/common.h"

#include "kv/budget.h"

namespace fkv::kvp {

int Budget::of(int n) const { return is_count ? count : floor_mul(n, rate); }

int64_t budget_rows(const PolicyOptions& o, int n) {
  if (o.kv_budget) return *o.kv_budget;
  return floor_mul(n, o.retain_rate.value_or(kDefaultRetainRate));
}

int64_t budget_or_all(const PolicyOptions& o, int n_prompt, int64_t protected_rows) {
  const int64_t b = budget_rows(o, n_prompt);
  return b > protected_rows ? b : n_prompt;
}

int64_t keeps_every_row(const PolicyOptions&, const PolicyModelInfo&, int n_prompt) {
  return n_prompt;
}

int64_t window_budget_rows(const PolicyOptions& o, const PolicyModelInfo&, int n_prompt) {
  return budget_or_all(o, n_prompt, o.window.value_or(kDefaultWindow));
}

Status check_rate(const std::string& method, const char* flag, std::optional<double> v) {
  if (v && !(*v > 0.0 && *v <= 1.0))
    return Status::error(strfmt("%s: %s must be in (0, 1], got %g", method.c_str(), flag, *v));
  return Status::ok();
}

Expected<WindowOpts> parse_window(const PolicyOptions& o) {
  WindowOpts w;
  if (o.window) {
    if (*o.window < 1)
      return Status::error(strfmt("%s: window must be >= 1, got %d", o.method.c_str(), *o.window));
    w.window = *o.window;
  }
  if (o.kernel) {
    if (*o.kernel < 1 || *o.kernel % 2 == 0)
      return Status::error(
          strfmt("%s: kernel must be a positive odd number (same-length pooling "
                 "with padding kernel/2), got %d",
                 o.method.c_str(), *o.kernel));
    w.kernel = *o.kernel;
  }
  if (o.pooling) {
    if (*o.pooling == "max" || *o.pooling == "maxpool") {
      w.pooling = Pooling::kMax;
    } else if (*o.pooling == "avg" || *o.pooling == "avgpool") {
      w.pooling = Pooling::kAvg;
    } else {
      return Status::error(strfmt("%s: pooling must be 'max' or 'avg', got '%s'", o.method.c_str(),
                                  o.pooling->c_str()));
    }
  }
  return w;
}

Expected<Budget> parse_budget(const PolicyOptions& o, int min_count, const char* min_what) {
  FKV_RETURN_IF_ERROR(check_rate(o.method, "retain_rate", o.retain_rate));
  if (o.kv_budget && o.retain_rate)
    return Status::error(
        strfmt("%s: give either kv_budget (%d tokens) or retain_rate (%g), not "
               "both",
               o.method.c_str(), *o.kv_budget, *o.retain_rate));
  Budget b;
  if (o.kv_budget) {
    if (*o.kv_budget <= min_count)
      return Status::error(strfmt("%s: kv_budget %d must be greater than the %s (%d)",
                                  o.method.c_str(), *o.kv_budget, min_what, min_count));
    b.is_count = true;
    b.count = *o.kv_budget;
  } else {
    b.rate = o.retain_rate.value_or(kDefaultRetainRate);
  }
  return b;
}

Status check_layer(const std::string& method, const char* flag, int layer,
                   const PolicyModelInfo& model) {
  if (layer < 0 || layer >= model.n_layers)
    return Status::error(strfmt("%s: %s %d is out of range: the model has %d layers (0..%d)",
                                method.c_str(), flag, layer, model.n_layers, model.n_layers - 1));
  return Status::ok();
}

}  // namespace fkv::kvp
