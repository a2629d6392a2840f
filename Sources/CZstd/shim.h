// zstd, for checkpoint images (poolfs checkpoint, poolfs restore).
#include <zstd.h>
