// Invariant checks. A failed DSOCR_CHECK is a bug in dsocr, never a consequence of bad input
// (bad input gets a Status): it prints the condition, the place and an optional streamed message
// to stderr and aborts, so the failure is loud and leaves a core dump.
//
//   DSOCR_CHECK(block < num_blocks_) << "block " << block << " out of range";
//   DSOCR_CHECK_EQ(a.size(), b.size());
//   DSOCR_DCHECK(expensive_invariant());   // compiled out in release builds (NDEBUG)
//
// Thread-safety: usable from any thread.
#pragma once

#include <sstream>

namespace dsocr::internal {

// Collects the streamed message; its destructor reports and aborts.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return message_; }

 private:
  const char* file_;
  int line_;
  const char* condition_;
  std::ostringstream message_;
};

// Makes `cond ? (void)0 : CheckFailure(...).stream() << ...` well-typed.
struct CheckVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace dsocr::internal

#define DSOCR_CHECK(cond)                      \
  (cond) ? (void)0                             \
         : ::dsocr::internal::CheckVoidify() & \
               ::dsocr::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define DSOCR_CHECK_OP_(a, op, b) DSOCR_CHECK((a)op(b)) << "(" << (a) << " vs " << (b) << ") "
#define DSOCR_CHECK_EQ(a, b) DSOCR_CHECK_OP_(a, ==, b)
#define DSOCR_CHECK_NE(a, b) DSOCR_CHECK_OP_(a, !=, b)
#define DSOCR_CHECK_LT(a, b) DSOCR_CHECK_OP_(a, <, b)
#define DSOCR_CHECK_LE(a, b) DSOCR_CHECK_OP_(a, <=, b)
#define DSOCR_CHECK_GT(a, b) DSOCR_CHECK_OP_(a, >, b)
#define DSOCR_CHECK_GE(a, b) DSOCR_CHECK_OP_(a, >=, b)

#ifdef NDEBUG
#define DSOCR_DCHECK(cond) \
  while (false) DSOCR_CHECK(cond)
#else
#define DSOCR_DCHECK(cond) DSOCR_CHECK(cond)
#endif
