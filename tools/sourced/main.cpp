#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  return sourced::cli::run(argc, argv, std::cin, std::cout, std::cerr);
}
