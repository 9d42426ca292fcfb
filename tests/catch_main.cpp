// The main() of every Catch2 test binary. Tests that need a GPU are tagged [cuda] and SKIP
// themselves when none is present (see tests/README.md).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
