// The main() of every Catch2 test binary. Tests that need a GPU are tagged [cuda] and return early
// with a WARN when none is present; scripts/device-run.sh runs them on a GPU machine.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
