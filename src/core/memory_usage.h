// Resident memory of this process, for the bench's peak-RSS column (Linux /proc; elsewhere the
// functions report "unsupported" and the bench writes 0).
#pragma once

#include <cstddef>

namespace fkv {

// Peak resident set size in bytes since start-up or the last reset (VmHWM), 0 when unknown.
size_t peak_rss_bytes();
// Resets the peak to the current RSS (writes "5" to /proc/self/clear_refs, Linux >= 4.0), so a
// bench row measures its own peak. Returns false when the kernel does not allow it; the peak then
// stays the process-wide one.
bool reset_peak_rss();

}  // namespace fkv
