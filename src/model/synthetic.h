// Real model shapes without the files: configs of well-known models for Model::synthetic (bench
// runs of shapes nobody has to download; tools/scripts/write_synthetic_gguf.py writes the same
// shapes as GGUF so other engines can load identical files).
#pragma once

#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/config.h"

namespace fkv {

// "llama-3.2-1b", "llama-3.1-8b", "qwen2.5-0.5b": the published config.json values (layers,
// widths, heads, vocabulary, RoPE). Error names the known shapes.
Expected<ModelConfig> synthetic_config(const std::string& name);
std::vector<std::string> synthetic_model_names();
// Weight dtypes Model::synthetic can make: "f32", "f16", "bf16", "q4_0", "q8_0", and "q4_k_m"
// (returned as kQ4_K: llama.cpp's Q4_K_M mix of q4_K and q6_K by tensor role).
Expected<DType> synthetic_weight_dtype(const std::string& name);

}  // namespace fkv
