// main() of every bench program: each defines keel::bench::run.

#include "bench/bench_util.hpp"

int main(int argc, char** argv) {
  return keel::bench::run(argc, argv);
}
