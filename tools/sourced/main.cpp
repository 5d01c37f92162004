#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) {
  sourced::cli::use_huge_pages_for_heap();
  std::ios::sync_with_stdio(false);
  return sourced::cli::run(argc, argv, std::cin, std::cout, std::cerr);
}
