// libFuzzer target: the safetensors header parser must reject any malformed image cleanly.
#include <cstddef>
#include <cstdint>
#include <map>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::map<std::string, fkv::SafetensorsTensor> tensors;
  fkv::Status st = fkv::parse_safetensors(data, size, "<fuzz>", tensors);
  if (st.is_ok()) {
    // Every accepted tensor lies inside the buffer.
    for (const auto& [name, t] : tensors) {
      if (t.data < data || t.data + t.n_bytes > data + size) __builtin_trap();
    }
  }
  return 0;
}
