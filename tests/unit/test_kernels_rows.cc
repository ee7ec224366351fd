// matmul_rows (batched decode): each row bit-identical to the one-row matmul, default kernels.
#include "matmul_rows_check.h"

TEST(MatmulRows, EveryRowEqualsTheOneRowProduct) { fkv::test::check_matmul_rows_all_types(); }
