#include <cstdio>

#include <sourced/memory_store.hpp>

int main() {
  auto store = sourced::open_memory_store();
  auto r = store->append("consumer-1", sourced::ExpectedVersion::no_stream(), {{.type = "Installed"}});
  std::printf("appended at position %llu\n", static_cast<unsigned long long>(r.last_position.value()));
  return r.last_position.value() == 1 ? 0 : 1;
}
