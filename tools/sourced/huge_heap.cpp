// The process heap on transparent huge pages (see cli.hpp, use_huge_pages_for_heap).

#include <cstdint>
#include <cstdlib>

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli.hpp"

namespace sourced::cli {

void use_huge_pages_for_heap() {
  constexpr std::uintptr_t kHugePage = 2u << 20;
  constexpr std::size_t kReserve = 256u << 20;  // address space only: pages exist once touched
  // SQLite's page cache is allocated by the store's writer thread: one arena keeps it on the same heap.
  mallopt(M_ARENA_MAX, 1);
  // Large blocks (the batch's vectors, the output buffer) from the heap too: glibc serves them from fresh
  // mappings otherwise, touched anew (page by page) every time.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  // Freed memory stays for reuse instead of going back to the kernel and faulting in again.
  mallopt(M_TRIM_THRESHOLD, static_cast<int>(kReserve * 2));
  // Grow the heap once by kReserve and mark that range, as glibc's own glibc.malloc.hugetlb=1 tunable
  // does (it can only be set from the environment, before the process starts).
  auto* before = static_cast<char*>(sbrk(0));
  mallopt(M_TOP_PAD, static_cast<int>(kReserve));
  // Through a volatile pointer: the compiler may drop a malloc whose block is only freed.
  static void* volatile grow;
  grow = std::malloc(1 << 20);
  std::free(grow);
  mallopt(M_TOP_PAD, 16 << 20);
  auto* after = static_cast<char*>(sbrk(0));
  if (before == reinterpret_cast<char*>(-1) || after <= before) return;  // no brk heap: nothing to mark
  auto first = (reinterpret_cast<std::uintptr_t>(before) + kHugePage - 1) & ~(kHugePage - 1);
  auto last = reinterpret_cast<std::uintptr_t>(after) & ~(kHugePage - 1);
  // A kernel without THP (or with it off) refuses: the heap then works as before.
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}

}  // namespace sourced::cli
