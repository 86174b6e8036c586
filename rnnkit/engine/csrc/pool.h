// Recycled big buffers for the time loop.
//
// Every call of the loop needs the same few big buffers (states, caches, outputs, dxw: megabytes each).
// Fresh ones come from mmap: the first write to each 4 KB page faults into the kernel,
// which zeroes it. Measured here that cost 30-60% of the forward pointwise pass (2x512 and 1x128 LSTMs).
// So buffers of at least kPoolMin bytes (from 64 KB: glibc mmaps from 128 KB up) are handed out as tensors
// whose deleter returns the memory to a free list, and the next call of the same shape reuses it, already
// mapped; a block up to a quarter bigger than asked for serves too (shapes that vary a little: the last batch
// of an epoch, bucketed lengths).
//
// What sits idle is bounded by what the loops use: at most 1.25x the most bytes ever handed out at once
// (at least 64 MB, at most 1 GB), so a fixed-shape training loop finds all its buffers again, while varying
// shapes don't pile up blocks of every size met: beyond the bound the block idle longest goes back to the
// system first. The bound holds for idle and handed-out blocks together whenever a new block is mapped: bounded
// only when blocks came back, a no-grad forward of a new length mapped its buffers beside a full bound of idle
// blocks of other lengths (a 1x128 LSTM, B 32, lengths of 2000-5000: peak RSS 1.14 GB, 0.80 GB now, torch.nn
// 0.53 GB). `release()` returns every idle block (rnnkit.engine.native.release_memory()).
#pragma once
#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstdlib>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define RNNKIT_POOL_MMAP 1
#endif
#include <iterator>
#include <list>
#include <map>
#include <mutex>
#include <vector>

namespace rnnkit {

struct Pool {
  static constexpr size_t kPoolMin = size_t(1) << 16;
  static constexpr size_t kIdleMin = size_t(64) << 20, kIdleMax = size_t(1) << 30;
  struct Block {
    void* p;
    size_t bytes;
  };
  std::mutex mutex;
  std::list<Block> lru;  // idle blocks, the one idle longest first
  std::multimap<size_t, std::list<Block>::iterator> by_size;
  size_t idle_bytes = 0, live_bytes = 0, peak_live = 0;

  static Pool& get() {  // never destroyed: tensors may be freed during interpreter shutdown
    static Pool* pool = new Pool();
    return *pool;
  }
  size_t idle_cap() const { return std::clamp(peak_live + peak_live / 4, kIdleMin, kIdleMax); }
  // a block of at least `bytes` (its own size in `got`)
  void* take(size_t bytes, size_t& got) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto it = by_size.lower_bound(bytes);
      if (it != by_size.end() && it->first <= bytes + bytes / 4) {
        const Block b = *it->second;
        lru.erase(it->second);
        by_size.erase(it);
        idle_bytes -= b.bytes;
        got = b.bytes;
        note_live(b.bytes);
        return b.p;
      }
    }
    // none fits: before new memory is mapped, the blocks idle longest go back to the system until what the pool
    // holds, idle and handed out, stays within the bound (a fixed-shape loop never gets here after its first call)
    std::vector<Block> drop;
    {
      std::lock_guard<std::mutex> lock(mutex);
      while (!lru.empty() && idle_bytes + live_bytes + bytes > idle_cap()) drop.push_back(evict_oldest());
    }
    for (const Block& b : drop) unmap(b.p, b.bytes);
    void* p = map(bytes);
    TORCH_CHECK(p != nullptr, "rnnkit native: out of memory allocating ", bytes, " bytes");
    got = bytes;
    std::lock_guard<std::mutex> lock(mutex);
    note_live(bytes);
    return p;
  }
  void give(void* p, size_t bytes) {
    std::vector<Block> drop;
    {
      std::lock_guard<std::mutex> lock(mutex);
      live_bytes -= bytes;
      if (bytes <= idle_cap()) {
        lru.push_back({p, bytes});
        by_size.emplace(bytes, std::prev(lru.end()));
        idle_bytes += bytes;
        p = nullptr;
      }
      while (idle_bytes > idle_cap()) drop.push_back(evict_oldest());
    }
    if (p) unmap(p, bytes);
    for (const Block& b : drop) unmap(b.p, b.bytes);
  }
  // every idle block back to the system; returns the bytes released
  size_t release() {
    std::vector<Block> drop;
    size_t freed;
    {
      std::lock_guard<std::mutex> lock(mutex);
      freed = idle_bytes;
      while (!lru.empty()) drop.push_back(evict_oldest());
    }
    for (const Block& b : drop) unmap(b.p, b.bytes);
#ifdef __GLIBC__
    // glibc keeps freed blocks under its mmap threshold (which rises to the biggest mmapped block freed, up to
    // 32 MB) in its heap, where they stay in the process's memory: handed back to the system here, as promised
    malloc_trim(0);
#endif
    return freed;
  }
  std::vector<int64_t> stats() {  // (idle, live, peak) bytes
    std::lock_guard<std::mutex> lock(mutex);
    return {int64_t(idle_bytes), int64_t(live_bytes), int64_t(peak_live)};
  }

 private:
  void note_live(size_t bytes) {
    live_bytes += bytes;
    peak_live = std::max(peak_live, live_bytes);
  }
  // The blocks are mapped here, not taken from malloc: glibc serves blocks under its mmap threshold (which rises
  // to the biggest mmapped block freed, up to 32 MB) from its heap, where blocks the pool keeps idle for many calls
  // sat among torch's short-lived ones and the pages of blocks dropped stayed in the process. A 1x128 LSTM (B 32)
  // trained on lengths of 600-784 (RNNKIT_GEMM=blas) held 600 MB after 100 steps, 124 MB of it free in malloc's
  // heap; 540 MB and 65 MB mapped here. A block dropped goes back to the system at once.
  static void* map(size_t bytes) {
#ifdef RNNKIT_POOL_MMAP
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;  // (page-aligned: 64 bytes at least, as at::empty's)
#else
    return std::aligned_alloc(64, (bytes + 63) / 64 * 64);
#endif
  }
  static void unmap(void* p, size_t bytes) {
#ifdef RNNKIT_POOL_MMAP
    munmap(p, bytes);
#else
    std::free(p);
#endif
  }
  Block evict_oldest() {  // with the mutex held
    const Block b = lru.front();
    auto range = by_size.equal_range(b.bytes);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second == lru.begin()) {
        by_size.erase(it);
        break;
      }
    lru.pop_front();
    idle_bytes -= b.bytes;
    return b;
  }
};

// A pooled block as a DataPtr's context: the block goes back to the pool when the storage lets it go.
struct PoolBlock {
  void* p;
  size_t bytes;
  static void give_back(void* ctx) {
    auto* b = static_cast<PoolBlock*>(ctx);
    Pool::get().give(b->p, b->bytes);
    delete b;
  }
};

// at::empty(sizes, o), from the pool when big. The storage stays resizable as at::empty's is (out.resize_ to a
// bigger shape, as torch.nn's outputs allow): a resize takes new memory from torch's CPU allocator, copies, and
// hands the block back to the pool.
inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& o) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  const size_t bytes = size_t(n) * c10::elementSize(c10::typeMetaToScalarType(o.dtype()));
  if (bytes < Pool::kPoolMin || o.device().type() != c10::DeviceType::CPU) return at::empty(sizes, o);
  size_t got = 0;
  void* p = Pool::get().take(bytes, got);
  c10::DataPtr data(p, new PoolBlock{p, got}, &PoolBlock::give_back, c10::Device(c10::DeviceType::CPU));
  c10::Storage storage(c10::Storage::use_byte_size_t(), bytes, std::move(data), c10::GetCPUAllocator(),
                       /*resizable=*/true);
  at::Tensor t = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                                          o.dtype());
  t.unsafeGetTensorImpl()->set_sizes_contiguous(sizes);
  return t;
}

}  // namespace rnnkit
