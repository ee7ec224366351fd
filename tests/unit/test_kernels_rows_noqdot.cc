// matmul_rows with the quantised dot turned off (FKV_QDOT=0: quantised weights are dequantised
// and multiplied in f32), so its conversion branch is checked as well. The variable is read once,
// at the first matmul, so it is set before any test runs.
#include <cstdlib>

#include "matmul_rows_check.h"

namespace {
const bool kQdotOff = [] { return ::setenv("FKV_QDOT", "0", 1) == 0; }();
}

TEST(MatmulRowsNoQdot, EveryRowEqualsTheOneRowProduct) {
  ASSERT_TRUE(kQdotOff);
  fkv::test::check_matmul_rows_all_types();
}
