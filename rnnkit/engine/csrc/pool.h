// Recycled big buffers for the time loop.
//
// Every call of the loop needs the same few big buffers (states, caches, outputs, dxw: megabytes each).
// Fresh ones from malloc come from mmap: the first write to each 4 KB page faults into the kernel,
// which zeroes it. Measured here that cost 30-60% of the forward pointwise pass (2x512 and 1x128 LSTMs).
// So buffers of at least kPoolMin bytes are handed out as tensors whose deleter returns the memory to a
// free list keyed by size (from 64 KB: glibc mmaps from 128 KB up), and the next call of the same shape reuses it, already mapped. At most
// kPoolIdle bytes sit idle; beyond that, freed blocks go back to the system.
#pragma once
#include <ATen/ATen.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

namespace rnnkit {

struct Pool {
  static constexpr size_t kPoolMin = size_t(1) << 16, kPoolIdle = size_t(1) << 30;
  std::mutex mutex;
  std::map<size_t, std::vector<void*>> idle;  // size -> free blocks
  size_t idle_bytes = 0;

  static Pool& get() {  // never destroyed: tensors may be freed during interpreter shutdown
    static Pool* pool = new Pool();
    return *pool;
  }
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto it = idle.find(bytes);
      if (it != idle.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        idle_bytes -= bytes;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    TORCH_CHECK(p != nullptr, "rnnkit native: out of memory allocating ", bytes, " bytes");
    return p;
  }
  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (idle_bytes + bytes <= kPoolIdle) {
        idle[bytes].push_back(p);
        idle_bytes += bytes;
        return;
      }
    }
    std::free(p);
  }
};

// at::empty(sizes, o), from the pool when big.
inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& o) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  const size_t bytes = size_t(n) * c10::elementSize(c10::typeMetaToScalarType(o.dtype()));
  if (bytes < Pool::kPoolMin || o.device().type() != c10::DeviceType::CPU) return at::empty(sizes, o);
  void* p = Pool::get().take(bytes);
  return at::from_blob(p, sizes, [bytes](void* q) { Pool::get().give(q, bytes); }, o);
}

}  // namespace rnnkit
