#include "core/memory_usage.h"

#include <cstdio>
#include <cstring>

namespace fkv {
namespace {

// "VmHWM:   123456 kB" -> bytes; 0 when the field is missing.
size_t status_field_bytes(const char* field) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  size_t out = 0;
  const size_t flen = std::strlen(field);
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, field, flen) == 0 && line[flen] == ':') {
      unsigned long long kb = 0;
      if (std::sscanf(line + flen + 1, "%llu", &kb) == 1) out = static_cast<size_t>(kb) * 1024;
      break;
    }
  }
  std::fclose(f);
  return out;
}

}  // namespace

size_t peak_rss_bytes() { return status_field_bytes("VmHWM"); }

bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

}  // namespace fkv
