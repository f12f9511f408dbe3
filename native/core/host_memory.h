// Host (CPU) memory policy of the process. Light header.
#pragma once

namespace sam3 {

// Makes large host allocations go straight to the OS and back (glibc only; once per process;
// a MALLOC_MMAP_THRESHOLD_ set in the environment wins).
//
// Why: glibc raises its mmap threshold each time a large mmapped block is freed, after which
// the multi-megabyte activations of a big model are carved from the heap arenas and kept
// there. Measured on the full-size vision encoder (3.4 GB of weights, one 1008 px image):
// 13.5 GB peak RSS with glibc's default, 2.5 GB with a fixed 1 MB threshold, at the same speed.
void useFixedMmapThreshold();

}  // namespace sam3
