// libFuzzer target: any byte string must parse to ok or to an error, never crash, hang or leak.
#include <cstddef>
#include <cstdint>

#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)fkv::parse_gguf_bytes(data, size, "fuzz.gguf");
  return 0;
}
