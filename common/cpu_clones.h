// DSOCR_CPU_CLONES: compile a hot CPU loop twice, for x86-64-v3 (AVX2 + FMA) and for the
// baseline the binary targets, and pick one when the program loads (GCC function multiversioning).
// The binary stays portable (no -march flag) while the loops that decide our speed get the vector
// width of the machine they run on. Elsewhere (other compilers or architectures) it expands to
// nothing and the loop is compiled once.
//
// Integer loops give identical results in every clone; floating-point loops may differ in the
// last bit between clones (FMA contraction), never between runs on one machine.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DSOCR_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DSOCR_CPU_CLONES
#endif
